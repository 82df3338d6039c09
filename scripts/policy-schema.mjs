// Writes schema/policy.schema.json from the built zod schema (npm run build runs this).
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { policyJsonSchema } from '../dist/policy/json-schema.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
mkdirSync(path.join(root, 'schema'), { recursive: true });
writeFileSync(path.join(root, 'schema/policy.schema.json'), JSON.stringify(policyJsonSchema(), null, 2) + '\n');
