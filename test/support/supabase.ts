// Session cookies written by the real @supabase/ssr package: createServerClient with a cookie
// adapter (getAll/setAll), then auth.setSession(), capturing what it writes. The Supabase project's
// GoTrue is answered by the fetch given to the client (setSession asks /auth/v1/user who the
// token belongs to); nothing leaves the process.
import { createServerClient } from '@supabase/ssr';

export interface WrittenCookie {
  readonly name: string;
  readonly value: string;
}

export interface SupabaseSessionOptions {
  /** Extra user_metadata, to make the session large enough to be chunked. */
  readonly metadata?: Record<string, unknown>;
  /** createServerClient's cookieEncoding (default base64url, the package's default). */
  readonly cookieEncoding?: 'base64url' | 'raw';
}

class NoWebSocket {
  constructor() {
    throw new Error('realtime is not used by these tests');
  }
}

/** The cookies @supabase/ssr writes for a session holding `accessToken` (empty values = deletions, dropped). */
export async function supabaseSessionCookies(projectRef: string, accessToken: string, options: SupabaseSessionOptions = {}): Promise<WrittenCookie[]> {
  const user = {
    id: '8d0c7f52-1f6b-4b8e-9a43-5c1f0e2d9a71',
    aud: 'authenticated',
    role: 'authenticated',
    email: 'user@example.com',
    app_metadata: { provider: 'email', providers: ['email'] },
    user_metadata: { ...options.metadata },
    created_at: '2026-01-01T00:00:00Z',
  };
  const fetch = async (input: string | URL | Request): Promise<Response> => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    if (url.pathname === '/auth/v1/user') return new Response(JSON.stringify(user), { status: 200, headers: { 'content-type': 'application/json' } });
    return new Response('{"message":"not found"}', { status: 404, headers: { 'content-type': 'application/json' } });
  };
  const written = new Map<string, string>();
  const client = createServerClient(`https://${projectRef}.supabase.co`, 'anon-key-for-tests', {
    cookies: {
      getAll: () => [...written].map(([name, value]) => ({ name, value })),
      setAll: (cookies) => {
        for (const { name, value } of cookies) {
          if (value === '') written.delete(name);
          else written.set(name, value);
        }
      },
    },
    cookieEncoding: options.cookieEncoding ?? 'base64url',
    global: { fetch },
    // Node 20 has no native WebSocket; realtime is never connected here, so any constructor will do.
    realtime: { transport: NoWebSocket as never },
  });
  const { error } = await client.auth.setSession({ access_token: accessToken, refresh_token: 'refresh-token-for-tests' });
  if (error) throw error;
  return [...written].filter(([name]) => name.startsWith(`sb-${projectRef}-auth-token`)).map(([name, value]) => ({ name, value }));
}

/** A Cookie request header carrying `cookies` as a browser would send them (values URI-encoded where needed). */
export function cookieHeader(cookies: readonly WrittenCookie[], extra: readonly string[] = []): string {
  return [...extra, ...cookies.map(({ name, value }) => `${name}=${encodeURIComponent(value)}`)].join('; ');
}
