// README is part of the product: its reason-code table and its two commands must stay true.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { REASONS, STATUS_LABELS } from '../../src/reasons.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const README = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const PACKAGE = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };

describe('README', () => {
  it('documents every reason code with its HTTP status and body code', () => {
    for (const [reason, row] of Object.entries(REASONS)) {
      const row_ = `| \`${reason}\` | ${row.status} | ${STATUS_LABELS[row.status].code} |`;
      expect(README.split('\n').some((l) => l.startsWith(row_)), row_).toBe(true);
    }
  });

  it('gives the two quickstart commands, and package.json has them', () => {
    expect(README).toContain('npm ci && npm start');
    expect(README).toContain('npm test');
    expect(PACKAGE.scripts.start).toContain('examples/portcullis.yaml');
    expect(PACKAGE.scripts.test).toBeDefined();
  });
});
