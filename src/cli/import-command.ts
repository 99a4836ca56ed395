/** `diffgate import`: queue the import of a URL, then follow its progress until Active or Failed. */
import { DiffgateClient } from "./api-client.js";
import type { ImportCommand } from "./args.js";
import { CancelledError, CliError, messageOf } from "./errors.js";
import { followUntilFinal, type FinalState } from "./follow.js";
import { Progress, formatElapsed, formatMiB } from "./progress.js";
import type { CliIO } from "./run.js";

/** The URL without its query and fragment (which may carry tokens), for messages. */
function displayUrl(raw: string): string {
  const url = new URL(raw);
  url.username = "";
  url.password = "";
  return `${url.origin}${url.pathname}`;
}

/** The URL's last path segment, as the server names the file. */
function fileLabel(raw: string): string {
  const segment = new URL(raw).pathname.split("/").filter(Boolean).at(-1) ?? "import";
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

export async function runImport(command: ImportCommand, io: CliIO): Promise<void> {
  const api = new DiffgateClient({ baseUrl: command.server, apiKey: command.apiKey, signal: io.signal });
  let id: string;
  try {
    ({ id } = await api.importFromUrl({ type: command.type, url: command.url, message: command.message }));
  } catch (e) {
    if (io.signal.aborted) throw new CancelledError("interrupted");
    throw new CliError(`could not start the import: ${messageOf(e)}`);
  }
  const label = fileLabel(command.url);
  io.stderr.write(`Importing ${displayUrl(command.url)} as ${command.type} checkpoint ${id}\n`);

  const progress = new Progress({ label, total: undefined, stream: io.stderr });
  let final: FinalState;
  try {
    final = await followUntilFinal({
      api,
      apiKey: command.apiKey,
      id,
      signal: io.signal,
      onProgress: (p) => {
        progress.setTotal(p.bytesTotal);
        progress.set(p.bytesDone);
      },
      onNote: (message) => progress.note(message),
    });
  } catch (e) {
    progress.finish();
    if (io.signal.aborted) throw new CancelledError(`stopped following; the import goes on on the server (checkpoint ${id})`);
    throw new CliError(`lost track of the import of checkpoint ${id}: ${messageOf(e)}`);
  }
  const { done, elapsedMs } = progress.snapshot();
  if (final.status === "Failed") {
    progress.finish();
    throw new CliError(`checkpoint ${id} Failed: ${final.reason}`);
  }
  progress.finish(`Imported ${done ? `${formatMiB(done)} ` : ""}in ${formatElapsed(elapsedMs)}; checkpoint ${id} is Active.`);
  io.stdout.write(`${id}\n`);
}
