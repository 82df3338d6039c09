// `portcullis validate`: every problem of a policy file in one run (schema and compile problems
// together, no cascades), "did you mean" hints, and warnings for what is allowed but likely wrong.

import { PolicyError, formatPolicyIssue } from '../errors.js';
import { systemClock } from '../clock.js';
import { silentLogger } from '../observability/logger.js';
import { Metrics } from '../observability/metrics.js';
import { compileReportingAll, loadPolicyFileWithLocator, type LoadedPolicy } from '../policy/load.js';
import { ResourcePool, type Runtime } from '../runtime.js';
import { parseCommand, usageError } from './args.js';
import type { CliIo } from './io.js';

export const VALIDATE_USAGE = `Usage: portcullis validate --config FILE [--strict] [--allow-missing-env]

Checks a policy file and prints every problem with file:line:column, plus warnings (routes that
can never match, public routes taking a protected route's requests, patterns in another
framework's syntax). Connects to nothing.

  -c, --config FILE       the policy file
      --strict            warnings are problems too (exit 1)
      --allow-missing-env an unset environment variable is not a problem (CI without secrets): a
                          placeholder stands in, and the checks of its value (secret lengths,
                          formats) are skipped — said once per variable
  -h, --help              this help

Exit status: 0 valid, 1 problems, 2 usage error.
`;

export async function runValidateCommand(args: string[], io: CliIo): Promise<number> {
  const parsed = parseCommand(
    args,
    { config: { type: 'string', short: 'c' }, strict: { type: 'boolean' }, 'allow-missing-env': { type: 'boolean' } },
    VALIDATE_USAGE,
    io,
  );
  if (typeof parsed === 'number') return parsed;
  const file = parsed.values.config as string | undefined;
  if (!file) return usageError('validate needs --config FILE', VALIDATE_USAGE, io);
  const strict = parsed.values.strict === true;
  const runtime: Runtime = {
    clock: systemClock,
    logger: silentLogger(),
    metrics: new Metrics({ defaultMetrics: false }),
    resources: new ResourcePool(),
    env: io.env,
    offline: true,
  };
  const problems = (count: number) => `${file}: ${count} problem${count === 1 ? '' : 's'}\n`;
  try {
    let loaded: LoadedPolicy | undefined;
    try {
      loaded = await loadPolicyFileWithLocator(file, io.env, { allowMissingEnv: parsed.values['allow-missing-env'] === true });
    } catch (err) {
      if (!(err instanceof PolicyError) || err.partial === undefined) throw err;
      const failed = err;
      // Schema problems: report them with the compile problems of everything they do not touch.
      runtime.resources.beginCompile();
      compileReportingAll(() => {
        throw failed;
      }, runtime, file);
    }
    for (const note of loaded!.notes ?? []) io.err(`note: ${note}\n`);
    runtime.resources.beginCompile();
    const compiled = compileReportingAll(() => loaded!, runtime, file);
    const document = loaded!.document;
    for (const warning of compiled.warnings) io.err(`${strict ? 'error' : 'warning'}: ${warning}\n`);
    if (strict && compiled.warnings.length > 0) {
      io.err(`${problems(compiled.warnings.length).trimEnd()} (warnings are problems with --strict)\n`);
      return 1;
    }
    io.out(`${file}: OK (${document.routes.length} routes, ${document.identity.length} identity sources, mode ${document.mode})\n`);
    return 0;
  } catch (err) {
    if (err instanceof PolicyError) {
      for (const issue of err.issues) io.err(`${formatPolicyIssue(issue)}\n`);
      io.err(problems(err.issues.length));
      return 1;
    }
    io.err(`${(err as Error).message}\n`);
    return 1;
  } finally {
    await runtime.resources.closeAll();
  }
}
