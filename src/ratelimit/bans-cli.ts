// `portcullis bans add|list|remove`: manage the ban list the server reads (rateLimits.bans).
// Exit codes: 0 ok, 1 failure (store error, unknown ban), 2 usage error.

import path from 'node:path';
import { parseArgs } from 'node:util';
import { PolicyError, PortcullisError } from '../errors.js';
import { loadPolicyFile } from '../policy/load.js';
import { parseDuration } from '../policy/units.js';
import { formatBanTarget, parseBanTarget, type BanRecord, type BanStore, type BanTarget } from './bans.js';
import { FileBanStore } from './bans-file.js';
import { PostgresBanStore } from './bans-postgres.js';

export interface BansCliIo {
  out(text: string): void;
  err(text: string): void;
  env: Readonly<Record<string, string | undefined>>;
}

const USAGE = `Usage:
  portcullis bans add TARGET [--route NAME] [--reason TEXT] [--for DURATION] [--by NAME] STORE
  portcullis bans list [--json] [--all] STORE
  portcullis bans remove TARGET [--route NAME] STORE

TARGET: ip:ADDRESS, ip:CIDR, tenant:NAME, subject:SUB, apiKey:KEY_ID
STORE (one of):
  --config FILE         the policy file's rateLimits.bans
  --file PATH           a JSON ban file
  --postgres URL        a PostgreSQL database ("env" = $DATABASE_URL) [--schema S] [--table T]
--route limits an ip ban to one route (as escalate scope ip+route writes them).
--for makes the ban expire (e.g. 30d); without it the ban is permanent.
--all lists expired bans too. Automatic bans (escalate:) are listed "by portcullis" with their
reason and offences; removing one also resets its offence count.
`;

const OPTIONS = {
  config: { type: 'string' },
  file: { type: 'string' },
  postgres: { type: 'string' },
  schema: { type: 'string' },
  table: { type: 'string' },
  reason: { type: 'string' },
  for: { type: 'string' },
  by: { type: 'string' },
  route: { type: 'string' },
  json: { type: 'boolean' },
  all: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const IDENTIFIER = /^[a-z_][a-z0-9_]*$/;

class UsageError extends Error {}

export async function runBansCommand(argv: string[], io: BansCliIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: true });
  } catch (err) {
    io.err(`${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const [command, ...targets] = positionals;
  if (values.help) {
    io.out(USAGE);
    return 0;
  }
  if (command === undefined) {
    io.err(USAGE);
    return 2;
  }

  let store: BanStore | undefined;
  try {
    const expected = command === 'list' ? 0 : 1;
    if (!['add', 'list', 'remove'].includes(command)) throw new UsageError(`unknown bans command "${command}"`);
    if (targets.length !== expected) throw new UsageError(`bans ${command} takes ${expected === 0 ? 'no target' : 'exactly one TARGET'}`);
    if (command !== 'add' && (values.reason !== undefined || values.for !== undefined || values.by !== undefined)) {
      throw new UsageError('--reason, --for and --by belong to bans add');
    }
    if (command === 'list' && values.route !== undefined) throw new UsageError('--route belongs to bans add and bans remove');
    store = await openStore(values, io.env);
    switch (command) {
      case 'add':
        return await add(store, targets[0]!, values, io);
      case 'remove':
        return await remove(store, targets[0]!, values, io);
      default:
        return await list(store, values, io);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`${err.message}\n\n${USAGE}`);
      return 2;
    }
    if (err instanceof PortcullisError && err.code === 'CONFIG_INVALID') {
      io.err(`${err.message}\n`);
      return 2;
    }
    io.err(`${err instanceof PortcullisError ? err.message : `unexpected error: ${(err as Error).message}`}\n`);
    return 1;
  } finally {
    await store?.close();
  }
}

type Values = { [K in keyof typeof OPTIONS]?: (typeof OPTIONS)[K]['type'] extends 'boolean' ? boolean : string };

async function openStore(values: Values, env: BansCliIo['env']): Promise<BanStore> {
  const chosen = (['config', 'file', 'postgres'] as const).filter((k) => values[k] !== undefined);
  if (chosen.length !== 1) throw new UsageError('choose the ban store with exactly one of --config, --file, --postgres');
  if (values.file !== undefined) return new FileBanStore(values.file);
  if (values.postgres !== undefined) {
    const url = values.postgres === 'env' ? env.DATABASE_URL : values.postgres;
    if (!url) throw new UsageError('--postgres env needs DATABASE_URL');
    const schema = values.schema ?? 'public';
    const table = values.table ?? 'portcullis_bans';
    if (!IDENTIFIER.test(schema) || !IDENTIFIER.test(table)) throw new UsageError('--schema and --table must be lower-case SQL identifiers');
    return new PostgresBanStore({ url, schema, table });
  }
  let policy;
  try {
    policy = await loadPolicyFile(values.config!, env);
  } catch (err) {
    if (err instanceof PolicyError) throw new PortcullisError('POLICY_INVALID', err.message);
    throw err;
  }
  const bans = policy.rateLimits?.bans;
  if (bans === undefined) throw new PortcullisError('CONFIG_INVALID', `${values.config}: the policy has no rateLimits.bans section`);
  if (bans.file !== undefined) return new FileBanStore(path.resolve(path.dirname(values.config!), bans.file));
  const url = bans.postgres!.url ?? env.DATABASE_URL;
  if (!url) throw new PortcullisError('CONFIG_INVALID', `${values.config}: rateLimits.bans.postgres.url is not set and DATABASE_URL is empty`);
  return new PostgresBanStore({ url, schema: bans.postgres!.schema, table: bans.postgres!.table });
}

function targetOf(text: string, values: Values): BanTarget {
  const target = parseBanTarget(text);
  if (values.route === undefined) return target;
  if (target.kind !== 'ip') throw new UsageError('--route applies to ip bans only');
  if (values.route === '') throw new UsageError('--route needs a route name');
  return { ...target, route: values.route };
}

async function add(store: BanStore, text: string, values: Values, io: BansCliIo): Promise<number> {
  const target = targetOf(text, values);
  const now = Date.now();
  let expiresAt: string | undefined;
  if (values.for !== undefined) {
    const ms = parseDuration(values.for);
    if (ms === undefined || ms <= 0) throw new UsageError(`--for "${values.for}" is not a duration (e.g. 12h, 30d)`);
    expiresAt = new Date(now + ms).toISOString();
  }
  const createdBy = values.by ?? io.env.USER;
  const record: BanRecord = {
    ...target,
    ...(values.reason ? { reason: values.reason } : {}),
    createdAt: new Date(now).toISOString(),
    ...(expiresAt ? { expiresAt } : {}),
    ...(createdBy ? { createdBy } : {}),
  };
  await store.put(record);
  io.out(`banned ${formatBanTarget(target)}${expiresAt ? ` until ${expiresAt}` : ' permanently'}\n`);
  return 0;
}

async function remove(store: BanStore, text: string, values: Values, io: BansCliIo): Promise<number> {
  const target = targetOf(text, values);
  if (!(await store.remove(target))) {
    io.err(`${formatBanTarget(target)} is not banned\n`);
    return 1;
  }
  io.out(`removed the ban on ${formatBanTarget(target)}\n`);
  return 0;
}

async function list(store: BanStore, values: Values, io: BansCliIo): Promise<number> {
  const now = Date.now();
  const records = (await store.list()).filter((r) => values.all || r.expiresAt === undefined || Date.parse(r.expiresAt) > now);
  if (values.json) {
    io.out(JSON.stringify(records, null, 2) + '\n');
    return 0;
  }
  if (records.length === 0) {
    io.out('no bans\n');
    return 0;
  }
  for (const r of records) {
    const until = r.expiresAt === undefined ? 'permanent' : Date.parse(r.expiresAt) > now ? `until ${r.expiresAt}` : `expired ${r.expiresAt}`;
    const by = r.createdBy ? ` by ${r.createdBy}` : '';
    const offences = r.offences !== undefined ? `\t${r.offences} offences ${r.firstOffence ?? '?'} – ${r.lastOffence ?? '?'}` : '';
    io.out(`${formatBanTarget(r)}\t${until}\tsince ${r.createdAt}${by}${r.reason ? `\t${r.reason}` : ''}${offences}\n`);
  }
  return 0;
}
