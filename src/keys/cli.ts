// `portcullis keys …` and `portcullis migrate`. The store comes from the policy's keyStore section
// (--config FILE) or from --store file:PATH | postgres://URL; --store wins when both are given
// (the policy then still supplies the pepper and maxExpiry). Exit codes: 0 ok, 1 failure, 2 usage.

import { parseArgs } from 'node:util';
import pg from 'pg';
import { systemClock } from '../clock.js';
import { PolicyError, PortcullisError, formatPolicyIssue } from '../errors.js';
import { silentLogger } from '../observability/logger.js';
import { loadPolicyFile } from '../policy/load.js';
import { parseDuration } from '../policy/units.js';
import { createKey, importKey, revokeKey, rotateKey, type ImportedSecret, type KeyAdmin } from './admin.js';
import { keyStoreSchema, type KeyStoreConfig } from './config.js';
import { KeyHasher } from './hashing.js';
import { openKeyStore } from './open.js';
import { migrateKeySchema } from './postgres/migrations.js';
import { keyStatus, type KeyRecord } from './record.js';
import { effectiveKeyStoreConfig, storeLocation, storeLocationFromFlag, type StoreLocation } from './settings.js';

export interface CommandIo {
  out(text: string): void;
  err(text: string): void;
  env: Readonly<Record<string, string | undefined>>;
}

const STORE_FLAGS = 'Store: --config FILE (the policy\'s keyStore section) or --store file:PATH | postgres://URL [--schema NAME]';

export const KEYS_USAGE = `Usage:
  portcullis keys create --tenant T --name N --expires-in 90d [--scopes a,b] [--prefix P] [--environment E] [--json]
  portcullis keys list [--tenant T] [--json]
  portcullis keys revoke ID
  portcullis keys rotate ID [--grace 24h] [--expires-in 90d] [--json]
  portcullis keys import --tenant T --name N (--expires-in D | --expires-at ISO-8601) [--scopes a,b] [--id ID]
        (--key-env VAR [--prefix P] | --sha256 HEX --prefix P [--display-prefix S] | --bcrypt HASH --prefix P --display-prefix S)

${STORE_FLAGS}
A new key is printed once and never again; only its hash is stored. With --store, the HMAC pepper
comes from PORTCULLIS_KEY_PEPPER when set.
`;

export const MIGRATE_USAGE = `Usage:
  portcullis migrate (--config FILE | --store postgres://URL) [--schema NAME]

Creates or upgrades the PostgreSQL tables of the key store. Safe to run repeatedly and from
several replicas at once. The file store needs no migration.
`;

const STORE_OPTIONS = {
  config: { type: 'string', short: 'c' },
  store: { type: 'string' },
  schema: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

const KEY_OPTIONS = {
  ...STORE_OPTIONS,
  tenant: { type: 'string' },
  name: { type: 'string' },
  scopes: { type: 'string' },
  prefix: { type: 'string' },
  environment: { type: 'string' },
  'expires-in': { type: 'string' },
  'expires-at': { type: 'string' },
  grace: { type: 'string' },
  json: { type: 'boolean' },
  id: { type: 'string' },
  'key-env': { type: 'string' },
  sha256: { type: 'string' },
  bcrypt: { type: 'string' },
  'display-prefix': { type: 'string' },
} as const;

type Values = Record<string, string | boolean | undefined>;

class UsageError extends Error {}

export async function runKeysCommand(argv: string[], io: CommandIo): Promise<number> {
  const [subcommand, ...rest] = argv;
  if (subcommand === undefined || subcommand === 'help' || subcommand === '--help' || subcommand === '-h') {
    io.out(KEYS_USAGE);
    return subcommand === undefined ? 2 : 0;
  }
  if (!['create', 'list', 'revoke', 'rotate', 'import'].includes(subcommand)) {
    io.err(`unknown keys command "${subcommand}"\n\n${KEYS_USAGE}`);
    return 2;
  }
  return run(io, KEYS_USAGE, async () => {
    const { values, positionals } = parseArgs({ args: rest, options: KEY_OPTIONS, strict: true, allowPositionals: true });
    if (values.help) {
      io.out(KEYS_USAGE);
      return 0;
    }
    const opened = await openFromFlags(values, io);
    try {
      const admin: KeyAdmin = { store: opened.store, hasher: new KeyHasher(opened.config.pepper), clock: systemClock, maxExpiryMs: opened.config.maxExpiry };
      switch (subcommand) {
        case 'create':
          return await create(admin, values, positionals, opened.config, io);
        case 'list':
          return await list(admin, values, positionals, io);
        case 'revoke':
          return await revoke(admin, onlyId(positionals), io);
        case 'rotate':
          return await rotate(admin, values, onlyId(positionals), io);
        default:
          return await importCommand(admin, values, positionals, io);
      }
    } finally {
      await opened.store.close();
    }
  });
}

export async function runMigrateCommand(argv: string[], io: CommandIo): Promise<number> {
  return run(io, MIGRATE_USAGE, async () => {
    const { values, positionals } = parseArgs({ args: argv, options: STORE_OPTIONS, strict: true, allowPositionals: true });
    if (values.help) {
      io.out(MIGRATE_USAGE);
      return 0;
    }
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
    const { location } = await resolveLocation(values, io);
    if (location.kind === 'file') {
      io.out(`key store is the file ${location.path}: nothing to migrate\n`);
      return 0;
    }
    const client = new pg.Client({ connectionString: location.url, connectionTimeoutMillis: location.connectTimeoutMs, application_name: 'portcullis-migrate' });
    try {
      await client.connect();
      const result = await migrateKeySchema(client, location.schema);
      if (result.applied.length === 0) io.out(`schema "${location.schema}": key tables already at version ${result.to}\n`);
      else io.out(`schema "${location.schema}": key tables migrated from version ${result.from} to ${result.to}\n${result.applied.map((m) => `  applied ${m}\n`).join('')}`);
      return 0;
    } catch (err) {
      if (err instanceof PortcullisError) throw err;
      throw new PortcullisError('STORE_UNAVAILABLE', `migration failed: ${(err as Error).message}`, { cause: err });
    } finally {
      await client.end().catch(() => undefined);
    }
  });
}

/** Run a command body, turning errors into messages and exit codes. */
async function run(io: CommandIo, usage: string, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.err(`${(err as Error).message}\n\n${usage}`);
      return 2;
    }
    if (err instanceof PolicyError) {
      for (const issue of err.issues) io.err(`${formatPolicyIssue(issue)}\n`);
      return 1;
    }
    if (err instanceof PortcullisError) {
      io.err(`error: ${err.message}\n`);
      return err.code === 'CONFIG_INVALID' ? 2 : 1;
    }
    io.err(`error: ${(err as Error).message}\n`);
    return 1;
  }
}

async function resolveLocation(values: Values, io: CommandIo): Promise<{ location: StoreLocation; config: KeyStoreConfig }> {
  const configFile = values.config as string | undefined;
  const storeFlag = values.store as string | undefined;
  const schema = values.schema as string | undefined;
  if (configFile === undefined && storeFlag === undefined) throw new UsageError('give --config FILE or --store file:PATH | postgres://URL');
  let config: KeyStoreConfig;
  if (configFile !== undefined) {
    config = effectiveKeyStoreConfig((await loadPolicyFile(configFile, io.env)).keyStore);
  } else {
    const pepper = io.env.PORTCULLIS_KEY_PEPPER;
    const parsed = keyStoreSchema.safeParse(pepper !== undefined ? { pepper } : {});
    if (!parsed.success) throw new PortcullisError('CONFIG_INVALID', `PORTCULLIS_KEY_PEPPER: ${parsed.error.issues[0]!.message}`);
    config = parsed.data;
  }
  let location = storeFlag !== undefined ? storeLocationFromFlag(storeFlag, schema, config) : storeLocation(config, configFile, io.env);
  if (schema !== undefined && location.kind === 'postgres') location = { ...location, schema };
  return { location, config };
}

async function openFromFlags(values: Values, io: CommandIo) {
  const { location, config } = await resolveLocation(values, io);
  const store = openKeyStore(location, { logger: silentLogger() }, 'admin');
  return { store, config };
}

function onlyId(positionals: string[]): string {
  if (positionals.length !== 1) throw new UsageError('give exactly one key ID');
  return positionals[0]!;
}

function required(values: Values, flag: string): string {
  const value = values[flag];
  if (typeof value !== 'string' || value === '') throw new UsageError(`--${flag} is required`);
  return value;
}

function durationFlag(values: Values, flag: string): number | undefined {
  const text = values[flag];
  if (typeof text !== 'string') return undefined;
  const ms = parseDuration(text);
  if (ms === undefined) throw new UsageError(`--${flag}: invalid duration "${text}" (e.g. 90d, 24h, 30m)`);
  return ms;
}

function scopesFlag(values: Values): string[] {
  const text = values.scopes;
  if (typeof text !== 'string') return [];
  return text.split(/[,\s]+/).filter((s) => s !== '');
}

function noPositionals(positionals: string[]): void {
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
}

const iso = (ms: number | undefined) => (ms === undefined ? '-' : new Date(ms).toISOString());

function describe(record: KeyRecord, now: number) {
  return {
    id: record.id,
    tenant: record.tenant,
    name: record.name,
    scopes: [...record.scopes],
    environment: record.environment ?? null,
    displayPrefix: record.displayPrefix,
    hashAlgorithm: record.hashAlgorithm,
    status: keyStatus(record, now),
    createdAt: iso(record.createdAt),
    expiresAt: iso(record.expiresAt),
    revokedAt: record.revokedAt !== undefined ? iso(record.revokedAt) : null,
    lastUsedAt: record.lastUsedAt !== undefined ? iso(record.lastUsedAt) : null,
    rotatedTo: record.rotatedTo ?? null,
  };
}

function printNewKey(io: CommandIo, values: Values, key: string, record: KeyRecord, headline: string): void {
  if (values.json) {
    io.out(`${JSON.stringify({ key, ...describe(record, systemClock.now()) })}\n`);
    return;
  }
  io.out(
    `${headline}\n` +
      `  id:      ${record.id}\n  tenant:  ${record.tenant}\n  name:    ${record.name}\n  scopes:  ${record.scopes.join(' ') || '-'}\n` +
      `  expires: ${iso(record.expiresAt)}\n\n` +
      `The key is shown this once and cannot be recovered; store it now:\n\n${key}\n`,
  );
}

async function create(admin: KeyAdmin, values: Values, positionals: string[], config: KeyStoreConfig, io: CommandIo): Promise<number> {
  noPositionals(positionals);
  const expiresInMs = durationFlag(values, 'expires-in');
  if (expiresInMs === undefined) throw new UsageError('--expires-in is required: every key expires (e.g. --expires-in 90d)');
  const { key, record } = await createKey(admin, {
    tenant: required(values, 'tenant'),
    name: required(values, 'name'),
    scopes: scopesFlag(values),
    environment: values.environment as string | undefined,
    prefix: (values.prefix as string | undefined) ?? config.defaultPrefix,
    expiresInMs,
  });
  printNewKey(io, values, key, record, 'Created API key');
  return 0;
}

async function list(admin: KeyAdmin, values: Values, positionals: string[], io: CommandIo): Promise<number> {
  noPositionals(positionals);
  const records = await admin.store.list({ tenant: values.tenant as string | undefined });
  const now = admin.clock.now();
  if (values.json) {
    io.out(`${JSON.stringify(records.map((r) => describe(r, now)))}\n`);
    return 0;
  }
  if (records.length === 0) {
    io.out('no keys\n');
    return 0;
  }
  const rows = [
    ['ID', 'TENANT', 'NAME', 'KEY', 'SCOPES', 'STATUS', 'EXPIRES', 'LAST USED'],
    ...records.map((r) => {
      const status = keyStatus(r, now);
      return [
        r.id,
        r.tenant,
        r.name,
        `${r.displayPrefix}…`,
        r.scopes.join(' ') || '-',
        status === 'active' && r.rotatedTo !== undefined ? `rotating→${r.rotatedTo.slice(0, 8)}` : status,
        iso(r.expiresAt).slice(0, 16).replace('T', ' '),
        r.lastUsedAt !== undefined ? iso(r.lastUsedAt).slice(0, 16).replace('T', ' ') : '-',
      ];
    }),
  ];
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  io.out(rows.map((row) => row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n');
  return 0;
}

async function revoke(admin: KeyAdmin, id: string, io: CommandIo): Promise<number> {
  const { record, alreadyRevoked } = await revokeKey(admin, id);
  io.out(alreadyRevoked ? `key ${id} was already revoked at ${iso(record.revokedAt)}\n` : `revoked key ${id} (${record.tenant}/${record.name})\n`);
  return 0;
}

async function rotate(admin: KeyAdmin, values: Values, id: string, io: CommandIo): Promise<number> {
  const graceMs = durationFlag(values, 'grace') ?? 0;
  const { key, record, previous } = await rotateKey(admin, id, { graceMs, expiresInMs: durationFlag(values, 'expires-in') });
  printNewKey(io, values, key, record, `Rotated key ${id}: the old key works until ${iso(previous.expiresAt)}. New API key`);
  return 0;
}

async function importCommand(admin: KeyAdmin, values: Values, positionals: string[], io: CommandIo): Promise<number> {
  noPositionals(positionals);
  const now = admin.clock.now();
  const expiresInMs = durationFlag(values, 'expires-in');
  const expiresAtText = values['expires-at'] as string | undefined;
  if ((expiresInMs === undefined) === (expiresAtText === undefined)) throw new UsageError('give one of --expires-in or --expires-at');
  const expiresAt = expiresInMs !== undefined ? now + expiresInMs : Date.parse(expiresAtText!);
  if (Number.isNaN(expiresAt)) throw new UsageError(`--expires-at: not an ISO-8601 time: "${expiresAtText}"`);

  const sources = ['key-env', 'sha256', 'bcrypt'].filter((flag) => values[flag] !== undefined);
  if (sources.length !== 1) throw new UsageError('give exactly one of --key-env VAR, --sha256 HEX, --bcrypt HASH');
  const prefix = values.prefix as string | undefined;
  const displayPrefix = values['display-prefix'] as string | undefined;
  let secret: ImportedSecret;
  if (values['key-env'] !== undefined) {
    const variable = values['key-env'] as string;
    const key = io.env[variable];
    if (key === undefined || key === '') throw new UsageError(`environment variable ${variable} is not set`);
    secret = { kind: 'plaintext', key: key.trim(), prefix };
  } else if (values.sha256 !== undefined) {
    secret = { kind: 'sha256', hash: values.sha256 as string, prefix: required(values, 'prefix'), displayPrefix };
  } else {
    secret = { kind: 'bcrypt', hash: values.bcrypt as string, prefix: required(values, 'prefix'), displayPrefix: required(values, 'display-prefix') };
  }
  const record = await importKey(
    admin,
    {
      tenant: required(values, 'tenant'),
      name: required(values, 'name'),
      scopes: scopesFlag(values),
      environment: values.environment as string | undefined,
      id: values.id as string | undefined,
      expiresAt,
    },
    secret,
  );
  if (values.json) io.out(`${JSON.stringify(describe(record, now))}\n`);
  else io.out(`imported key ${record.id} (${record.tenant}/${record.name}, ${record.hashAlgorithm}), expires ${iso(record.expiresAt)}\n`);
  return 0;
}
