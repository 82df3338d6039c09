/**
 * A deadline on a dependency's answer (Redis, PostgreSQL, an HTTP lookup, a JWKS fetch).
 *
 * Timers run before the event loop reads its sockets. After a stall (a GC pause, a busy callback,
 * a process the OS did not schedule) a plain setTimeout fires with the answer already waiting,
 * unread, and reports a healthy dependency as slow. So the deadline only starts the expiry: it
 * runs from a setImmediate, after the next poll phase has read what arrived, and not at all if
 * the answer came in meanwhile and cancelled it.
 */
export interface Deadline {
  /** The answer came in: expire will not run. Idempotent. */
  cancel(): void;
}

export function ioDeadline(ms: number, expire: () => void, options: { unref?: boolean } = {}): Deadline {
  let immediate: NodeJS.Immediate | undefined;
  let timer: NodeJS.Timeout | undefined = setTimeout(() => {
    timer = undefined;
    immediate = setImmediate(() => {
      immediate = undefined;
      expire();
    });
  }, ms);
  if (options.unref) timer.unref();
  return {
    cancel() {
      if (timer !== undefined) clearTimeout(timer);
      if (immediate !== undefined) clearImmediate(immediate);
      timer = immediate = undefined;
    },
  };
}
