// The editor schema: a JSON Schema of the policy file, generated from the zod schema the loader
// validates with (never written by hand). `npm run build` writes schema/policy.schema.json; a test
// keeps the committed file identical to what the current schema generates.

import { z } from 'zod';
import { policySchema } from './schema.js';

/** An exact `${VAR}` reference: allowed wherever a number is (README "Environment variables"). */
const ENV_REFERENCE = { type: 'string', pattern: '^\\$\\{[A-Za-z_][A-Za-z0-9_]*\\}$' };

export function policyJsonSchema(): Record<string, unknown> {
  // The input side: what a person writes (defaults optional, durations as "60s" or numbers).
  const generated = z.toJSONSchema(policySchema, { io: 'input', unrepresentable: 'any', target: 'draft-2020-12' }) as Record<string, unknown>;
  const schema = allowEnvNumbers(generated) as Record<string, unknown>;
  return {
    $schema: schema.$schema,
    title: 'Portcullis policy',
    description: 'Policy file of Portcullis, external authorization for Envoy and Istio. Generated from src/policy/schema.ts by npm run build; do not edit.',
    ...Object.fromEntries(Object.entries(schema).filter(([k]) => k !== '$schema')),
  };
}

function allowEnvNumbers(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(allowEnvNumbers);
  if (node === null || typeof node !== 'object') return node;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node)) out[k] = allowEnvNumbers(v);
  if (out.type === 'number' || out.type === 'integer') {
    const { default: def, ...numeric } = out;
    return def === undefined ? { anyOf: [numeric, ENV_REFERENCE] } : { default: def, anyOf: [numeric, ENV_REFERENCE] };
  }
  return out;
}
