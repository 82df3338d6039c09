// Rate limits: token bucket (GCRA) and sliding window, memory and Redis backends, lockout, bans.
export type { CompiledRateLimits, RateLimitInput, RateLimitVerdict, RouteRateLimiter } from './types.js';
export { compileRateLimits } from './compile.js';
