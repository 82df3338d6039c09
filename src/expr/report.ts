// Evaluation errors of policy expressions: counted (portcullis_expression_errors_total) and logged
// at warn, at most once per expression every LOG_INTERVAL_MS with the number left unlogged. The log
// names the expression by its document path and the error code only: never a value from the
// request or the token, so nothing a client sent (or a credential) reaches the log.

import type { CompileContext } from '../policy/context.js';
import type { CompiledExpression } from './compile.js';

export type ExpressionReporter = (expression: CompiledExpression, code: string) => void;

const LOG_INTERVAL_MS = 10_000;

export function expressionReporter(ctx: CompileContext, route: string): ExpressionReporter {
  const counter = ctx.runtime.metrics.counter(
    'portcullis_expression_errors_total',
    'Policy expressions that failed to evaluate (each one denied the request), by route and expression.',
    ['route', 'expression'],
  );
  const logger = ctx.runtime.logger;
  const clock = ctx.runtime.clock;
  const throttle = new Map<CompiledExpression, { last: number; suppressed: number }>();
  return (expression, code) => {
    counter.inc({ route, expression: expression.at });
    const now = clock.now();
    let state = throttle.get(expression);
    if (state === undefined) throttle.set(expression, (state = { last: -Infinity, suppressed: 0 }));
    if (now - state.last < LOG_INTERVAL_MS) {
      state.suppressed++;
      return;
    }
    logger.warn({ route, expression: expression.at, code, suppressed: state.suppressed }, 'policy expression failed to evaluate; request denied');
    state.last = now;
    state.suppressed = 0;
  };
}
