// A Runtime for tests: manual clock, silent logger, private metrics registry.
import { ManualClock } from '../../src/clock.js';
import { silentLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import type { CompiledPolicy } from '../../src/policy/compile.js';
import { compileReportingAll, parsePolicyWithLocator } from '../../src/policy/load.js';
import { ResourcePool, type Runtime } from '../../src/runtime.js';

export function testRuntime(overrides: Partial<Runtime> = {}): Runtime & { clock: ManualClock } {
  return {
    clock: new ManualClock(Date.now()),
    logger: silentLogger(),
    metrics: new Metrics({ defaultMetrics: false }),
    resources: new ResourcePool(),
    env: {},
    ...overrides,
  } as Runtime & { clock: ManualClock };
}

/** Parse + compile a policy given as YAML text (file name "policy.yaml" in messages), every problem at once. */
export function compileYaml(yaml: string, runtime: Runtime = testRuntime()): CompiledPolicy {
  runtime.resources.beginCompile();
  return compileReportingAll(() => parsePolicyWithLocator(yaml, 'policy.yaml', runtime.env), runtime, 'policy.yaml');
}
