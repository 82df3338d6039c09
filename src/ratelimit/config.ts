// PLACEHOLDER until the rate-limit issue lands: owned by the rate-limit work.
import { z } from 'zod';

export const rateLimitsSchema = z.strictObject({
  backend: z.literal('memory').default('memory'),
});
export type RateLimitsConfig = z.output<typeof rateLimitsSchema>;

/** Per-tenant overrides (plans): tenants.<name>.limits */
export const tenantLimitsSchema = z.record(z.string(), z.unknown());

/** Per-route rate-limit settings: routes[i].rateLimits */
export const routeRateLimitsSchema = z.array(z.string());
