// What every command gets: output streams and the environment (tests pass their own).

export interface CliIo {
  out(text: string): void;
  err(text: string): void;
  env: Readonly<Record<string, string | undefined>>;
}
