// PLACEHOLDER until the JWT issue lands: owned by the JWT work.
import { z } from 'zod';

export const issuerSchema = z.strictObject({
  issuer: z.string(),
});
export type IssuerConfig = z.output<typeof issuerSchema>;

export const jwtSourceSchema = z.strictObject({
  issuers: z.array(z.string()).min(1),
});
export type JwtSourceConfig = z.output<typeof jwtSourceSchema>;
