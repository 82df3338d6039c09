// URLs that reach a log line or an error message: scheme://host[:port]/path only. Userinfo
// (user:password@), the query (?access_token=…) and the fragment are dropped, whatever the scheme
// (https, redis, postgres…). Use redactUrl for a URL held in a variable and redactUrlsIn for text
// that may embed one (error messages of libraries, which often quote the URL they were given).

/** scheme://host[:port]/path of `url`; "(invalid URL)" when it does not parse (never the input). */
export function redactUrl(url: string | URL): string {
  let parsed: URL;
  try {
    parsed = typeof url === 'string' ? new URL(url) : url;
  } catch {
    return '(invalid URL)';
  }
  // Special schemes (http, https, ws…) have a host; others (redis:, postgres:) may keep an opaque
  // path in which "user:pw@host" would survive, hence host + pathname rebuilt by hand.
  const path = parsed.host === '' ? '' : parsed.pathname;
  return `${parsed.protocol}//${parsed.host}${path}`;
}

/** Anything that looks like scheme://… inside a text. */
const URL_IN_TEXT = /\b[a-z][a-z0-9+.-]*:\/\/[^\s"'<>`]+/gi;
/** Punctuation that ends a sentence rather than the URL. */
const TRAILING = /[.,;:!?)\]}]+$/;

/** `text` with every URL in it passed through redactUrl. */
export function redactUrlsIn(text: string): string {
  return text.replace(URL_IN_TEXT, (match) => {
    const trailing = TRAILING.exec(match)?.[0] ?? '';
    return redactUrl(match.slice(0, match.length - trailing.length)) + trailing;
  });
}
