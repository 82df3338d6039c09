// Every problem of an invalid policy file for commands that stop at it (check, test): the schema
// problems, plus the compile problems of the parts they leave intact, as validate reports them.

import { systemClock } from '../clock.js';
import { PolicyError, type PolicyIssue } from '../errors.js';
import { silentLogger } from '../observability/logger.js';
import { Metrics } from '../observability/metrics.js';
import { compileReportingAll } from '../policy/load.js';
import { ResourcePool } from '../runtime.js';

export async function allProblems(err: PolicyError, file: string, env: Readonly<Record<string, string | undefined>>): Promise<readonly PolicyIssue[]> {
  if (err.partial === undefined) return err.issues;
  const runtime = { clock: systemClock, logger: silentLogger(), metrics: new Metrics({ defaultMetrics: false }), resources: new ResourcePool(), env, offline: true };
  try {
    runtime.resources.beginCompile();
    compileReportingAll(() => {
      throw err;
    }, runtime, file);
    return err.issues;
  } catch (combined) {
    return combined instanceof PolicyError ? combined.issues : err.issues;
  } finally {
    await runtime.resources.closeAll();
  }
}
