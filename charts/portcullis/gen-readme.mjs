#!/usr/bin/env node
// Regenerates the values table of this chart's README.md from values.yaml (keys, defaults and the
// comment above each key) and values.schema.json (types, allowed values, bounds), between the
// <!-- values:start --> and <!-- values:end --> markers. The rest of README.md is hand-written.
//
//   node charts/portcullis/gen-readme.mjs           rewrite README.md
//   node charts/portcullis/gen-readme.mjs --check   exit 1 if README.md is not up to date
//   node charts/portcullis/gen-readme.mjs --check --chart DIR   (another copy of the chart)

import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

const START = '<!-- values:start -->';
const END = '<!-- values:end -->';
const MAX_DEFAULT = 60;

/**
 * Keys of values.yaml in file order, each with its path and the comment block right above it
 * (a blank line ends a block; commented-out example keys such as "# minAvailable: 1" are skipped).
 */
function keysWithComments(text) {
  const out = [];
  const stack = []; // { indent, key }
  let comment = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\s+$/, '');
    if (line.trim() === '') {
      comment = [];
      continue;
    }
    const indent = line.length - line.trimStart().length;
    const trimmed = line.trim();
    if (trimmed.startsWith('#')) {
      const body = trimmed.replace(/^#\s?/, '');
      // "# minAvailable: 1" is a commented-out example key, not prose ("# default: hot reload …").
      if (!/^[a-zA-Z][\w.-]*:\s*\S*$/.test(body)) comment.push(body);
      continue;
    }
    while (stack.length > 0 && stack[stack.length - 1].indent >= indent) stack.pop();
    comment = trimmed.startsWith('- ') ? [] : comment;
    if (trimmed.startsWith('-')) {
      // A list item: what follows at a deeper indent belongs to the list's default value.
      stack.push({ indent, key: '[]', opaque: true });
      continue;
    }
    const m = /^([a-zA-Z_][\w.-]*|"[^"]+"):(\s|$)/.exec(trimmed);
    if (!m) {
      comment = [];
      continue;
    }
    const key = m[1].replace(/^"|"$/g, '');
    // Keys inside list items or block scalars are not values of their own.
    const parent = stack[stack.length - 1];
    if (parent?.opaque) {
      comment = [];
      continue;
    }
    const keyPath = [...stack.map((s) => s.key), key];
    const rest = trimmed.slice(m[0].length).trim();
    out.push({ path: keyPath, comment: comment.join(' ') });
    stack.push({ indent, key, opaque: rest.startsWith('|') || rest.startsWith('>') });
    comment = [];
  }
  return out;
}

function get(object, keyPath) {
  return keyPath.reduce((o, k) => (o == null ? undefined : o[k]), object);
}

function schemaAt(schema, keyPath) {
  let node = schema;
  for (const key of keyPath) {
    node = node?.properties?.[key] ?? (typeof node?.additionalProperties === 'object' ? node.additionalProperties : undefined);
    if (!node) return undefined;
  }
  return node;
}

function isLeaf(value) {
  return value === null || typeof value !== 'object' || Array.isArray(value) || Object.keys(value).length === 0;
}

function formatDefault(value) {
  if (value === '') return '`""`';
  let text = JSON.stringify(value);
  if (text.length > MAX_DEFAULT) text = `${text.slice(0, MAX_DEFAULT - 1)}…`;
  return `\`${text.replaceAll('|', '\\|').replaceAll('`', "'")}\``;
}

function typeNames(node) {
  if (node.enum) return [`one of ${node.enum.map((v) => (v === '' ? '`""`' : `\`${v}\``)).join(', ')}`];
  if (node.type) return [node.type].flat();
  const alternatives = node.oneOf ?? node.anyOf;
  if (alternatives) return alternatives.flatMap(typeNames);
  return [];
}

function formatType(node) {
  if (!node) return '';
  const parts = [[...new Set(typeNames(node))].join(' or ')].filter(Boolean);
  if (node.minimum !== undefined) parts.push(`≥ ${node.minimum}`);
  if (node.maximum !== undefined) parts.push(`≤ ${node.maximum}`);
  if (node.minLength) parts.push('non-empty');
  return parts.join(', ');
}

function cell(text) {
  return text.replaceAll('|', '\\|').replace(/\s+/g, ' ').trim();
}

/** The table that belongs between the markers. */
export function valuesTable(chartDir) {
  const text = readFileSync(path.join(chartDir, 'values.yaml'), 'utf8');
  const values = YAML.parse(text);
  const schema = JSON.parse(readFileSync(path.join(chartDir, 'values.schema.json'), 'utf8'));
  const rows = []; // { key, line }
  const listed = new Set();
  for (const { path: keyPath, comment } of keysWithComments(text)) {
    const value = get(values, keyPath);
    if (value === undefined) throw new Error(`values.yaml: could not read ${keyPath.join('.')}`);
    listed.add(keyPath.join('.'));
    const node = schemaAt(schema, keyPath);
    const description = comment || node?.description || '';
    if (!isLeaf(value) && !description) continue;
    rows.push({ key: keyPath.join('.'), line: `| \`${keyPath.join('.')}\` | ${cell(formatType(node))} | ${isLeaf(value) ? formatDefault(value) : ''} | ${cell(description)} |` });
  }
  // Keys the schema accepts that values.yaml leaves unset (e.g. podDisruptionBudget.minAvailable):
  // listed after their siblings, without a default.
  const walk = (node, prefix) => {
    for (const [key, child] of Object.entries(node?.properties ?? {})) {
      const keyPath = [...prefix, key];
      const name = keyPath.join('.');
      if (!listed.has(name) && prefix.length > 0 && listed.has(prefix.join('.'))) {
        const parent = `${prefix.join('.')}.`;
        let at = rows.length;
        for (let i = rows.length - 1; i >= 0; i--) {
          if (rows[i].key.startsWith(parent) || rows[i].key === prefix.join('.')) {
            at = i + 1;
            break;
          }
        }
        rows.splice(at, 0, { key: name, line: `| \`${name}\` | ${cell(formatType(child))} | (unset) | ${cell(child.description ?? '')} |` });
        listed.add(name);
      }
      if (listed.has(name)) walk(child, keyPath);
    }
  };
  walk(schema, []);
  return ['| key | type | default | description |', '|---|---|---|---|', ...rows.map((r) => r.line)].join('\n');
}

export function renderReadme(chartDir) {
  const readme = readFileSync(path.join(chartDir, 'README.md'), 'utf8');
  const start = readme.indexOf(START);
  const end = readme.indexOf(END);
  if (start < 0 || end < start) throw new Error(`${chartDir}/README.md has no ${START} … ${END} section`);
  return `${readme.slice(0, start + START.length)}\n<!-- generated by gen-readme.mjs from values.yaml and values.schema.json: do not edit by hand -->\n\n${valuesTable(chartDir)}\n\n${readme.slice(end)}`;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const at = args.indexOf('--chart');
  const chartDir = at >= 0 ? path.resolve(args[at + 1]) : path.dirname(fileURLToPath(import.meta.url));
  const expected = renderReadme(chartDir);
  const file = path.join(chartDir, 'README.md');
  if (args.includes('--check')) {
    if (readFileSync(file, 'utf8') !== expected) {
      process.stderr.write(`${file} is out of date: run node charts/portcullis/gen-readme.mjs\n`);
      process.exit(1);
    }
  } else {
    writeFileSync(file, expected);
  }
}
