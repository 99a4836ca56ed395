/** Runs one `diffgate` command line and maps its outcome to an exit code; no process globals here. */
import { parseCommand, UsageError } from "./args.js";
import { CancelledError, messageOf } from "./errors.js";
import { runImport } from "./import-command.js";
import type { ProgressStream } from "./progress.js";
import { runUpload, type UploadDeps } from "./upload-command.js";

export interface CliIO {
  stdout: { write(text: string): boolean };
  stderr: ProgressStream;
  env: NodeJS.ProcessEnv;
  /** Aborted on Ctrl-C / SIGTERM. */
  signal: AbortSignal;
}

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;
export const EXIT_INTERRUPTED = 130;

export async function run(argv: string[], io: CliIO, deps: UploadDeps = {}): Promise<number> {
  try {
    const command = parseCommand(argv, io.env);
    switch (command.kind) {
      case "help":
        io.stdout.write(`${command.text}\n`);
        return EXIT_OK;
      case "upload":
        await runUpload(command, io, deps);
        return EXIT_OK;
      case "import":
        await runImport(command, io);
        return EXIT_OK;
    }
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr.write(`diffgate: ${e.message}\n\n${e.usage}\n`);
      return EXIT_USAGE;
    }
    if (e instanceof CancelledError) {
      io.stderr.write(`diffgate: ${e.message}\n`);
      return EXIT_INTERRUPTED;
    }
    io.stderr.write(`diffgate: ${messageOf(e)}\n`);
    return EXIT_FAILED;
  }
}
