// PLACEHOLDER until the API-key issue lands: owned by the API-key work.
import { z } from 'zod';

export const keyStoreSchema = z.strictObject({
  type: z.enum(['file', 'postgres']).default('file'),
});
export type KeyStoreConfig = z.output<typeof keyStoreSchema>;

export const apiKeySourceSchema = z.strictObject({
  headers: z.array(z.string()).optional(),
});
export type ApiKeySourceConfig = z.output<typeof apiKeySourceSchema>;
