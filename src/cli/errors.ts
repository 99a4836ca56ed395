/** Failures the CLI reports on stderr with exit code 1 (usage errors are {@link UsageError} in args.ts, exit code 2). */
export class CliError extends Error {
  override name = "CliError";
}

/** The user interrupted (Ctrl-C, SIGTERM): exit code 130. */
export class CancelledError extends Error {
  override name = "CancelledError";
}

export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
