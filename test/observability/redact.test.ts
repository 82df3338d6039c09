// URLs in logs and errors: scheme://host[:port]/path, never userinfo, query or fragment.

import { describe, expect, it } from 'vitest';
import { redactUrl, redactUrlsIn } from '../../src/observability/redact.js';

describe('redactUrl', () => {
  it.each([
    ['https://idp.example.com/.well-known/jwks.json', 'https://idp.example.com/.well-known/jwks.json'],
    ['https://user:s3cret@idp.example.com/jwks.json', 'https://idp.example.com/jwks.json'],
    ['https://user@idp.example.com:8443/jwks.json?access_token=abc&x=1#frag', 'https://idp.example.com:8443/jwks.json'],
    ['http://127.0.0.1:9/jwks?token=t0k3n', 'http://127.0.0.1:9/jwks'],
    ['HTTPS://IDP.EXAMPLE.COM', 'https://idp.example.com/'],
    ['redis://:pw@cache:6379/0', 'redis://cache:6379/0'],
    ['postgres://app:pw@db/test?sslmode=require', 'postgres://db/test'],
    ['http://[::1]:8080/k?token=x', 'http://[::1]:8080/k'],
  ])('%s → %s', (input, expected) => {
    expect(redactUrl(input)).toBe(expected);
  });

  it('never returns what it cannot parse', () => {
    expect(redactUrl('not a url with secret')).toBe('(invalid URL)');
    expect(redactUrl('http://us er:pw@bad host/')).toBe('(invalid URL)');
  });
});

describe('redactUrlsIn', () => {
  it('redacts every URL inside a text and leaves the rest', () => {
    expect(redactUrlsIn('Request cannot be constructed from a URL that includes credentials: http://u:pw@127.0.0.1:9/jwks.json?token=abc')).toBe(
      'Request cannot be constructed from a URL that includes credentials: http://127.0.0.1:9/jwks.json',
    );
    expect(redactUrlsIn('a https://x.test/p?q=1, then "http://u:p@y.test/z#f" end')).toBe('a https://x.test/p, then "http://y.test/z" end');
    expect(redactUrlsIn('getaddrinfo ENOTFOUND idp.invalid')).toBe('getaddrinfo ENOTFOUND idp.invalid');
  });
});
