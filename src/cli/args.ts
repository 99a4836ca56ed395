/** Command-line parsing and usage text of `diffgate`. Parsing does no I/O; the commands check files and the network. */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { CHECKPOINT_TYPES, MAX_PART_BYTES, type CheckpointType } from "../domain/checkpoints.js";

export const DEFAULT_SERVER = "http://127.0.0.1:8080";
export const DEFAULT_PART_SIZE_MB = 64;
export const DEFAULT_CONCURRENCY = 4;
const MAX_CONCURRENCY = 32;

/** A command line that cannot run: exit code 2, with the usage text of the command. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly usage: string,
  ) {
    super(message);
    this.name = "UsageError";
  }
}

export interface CommonOptions {
  /** Base URL of the Diffgate API, without a trailing slash. */
  server: string;
  apiKey: string;
}

export interface UploadCommand extends CommonOptions {
  kind: "upload";
  file: string;
  type: CheckpointType;
  /** The file name in the store; the file's base name when not given. */
  name: string | undefined;
  message: string | undefined;
  partSizeBytes: number;
  concurrency: number;
}

export interface ImportCommand extends CommonOptions {
  kind: "import";
  url: string;
  type: CheckpointType;
  message: string | undefined;
}

export interface HelpCommand {
  kind: "help";
  text: string;
}

export type Command = UploadCommand | ImportCommand | HelpCommand;

const TYPES = CHECKPOINT_TYPES.join("|");

const COMMON_HELP = `Common options:
  --server <url>     Diffgate base URL (default: $DIFFGATE_URL, else ${DEFAULT_SERVER})
  --api-key <key>    API key (default: $DIFFGATE_API_KEY)
  -h, --help         Show help`;

export const MAIN_USAGE = `Usage: diffgate <command> [options]

Commands:
  upload <file>      Upload a local model file as a new checkpoint (multipart, straight to the store)
  import <url>       Have the server import a model file from an http(s) URL, and follow its progress

${COMMON_HELP}

The new checkpoint's id is printed on stdout; progress and errors go to stderr.
Exit codes: 0 done, 1 failed, 2 bad usage.
Run "diffgate <command> --help" for a command's options.`;

export const UPLOAD_USAGE = `Usage: diffgate upload <file> --type <${TYPES}> [options]

Uploads <file> in parts, in parallel, straight to the object store through presigned URLs,
then completes the upload; prints the checkpoint id on stdout.

Options:
  -t, --type <type>          Checkpoint type (required): ${CHECKPOINT_TYPES.join(", ")}
  -n, --name <file name>     File name in the store (default: the file's base name)
  -m, --message <text>       Description stored with the checkpoint
  --part-size-mb <MiB>       Part size (default ${DEFAULT_PART_SIZE_MB}; at least 5, raised when a file
                             would need more than 10000 parts)
  --concurrency <n>          Parts uploaded at once (default ${DEFAULT_CONCURRENCY}, at most ${MAX_CONCURRENCY})

${COMMON_HELP}`;

export const IMPORT_USAGE = `Usage: diffgate import <url> --type <${TYPES}> [options]

Asks the server to download <url> into the store, shows its progress until the checkpoint is
Active (prints its id on stdout) or Failed (prints the reason on stderr, exit code 1).

Options:
  -t, --type <type>          Checkpoint type (required): ${CHECKPOINT_TYPES.join(", ")}
  -m, --message <text>       Description stored with the checkpoint

${COMMON_HELP}`;

const COMMON_OPTIONS = {
  server: { type: "string" },
  "api-key": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const satisfies ParseArgsConfig["options"];

const UPLOAD_OPTIONS = {
  ...COMMON_OPTIONS,
  type: { type: "string", short: "t" },
  name: { type: "string", short: "n" },
  message: { type: "string", short: "m" },
  "part-size-mb": { type: "string" },
  concurrency: { type: "string" },
} as const satisfies ParseArgsConfig["options"];

const IMPORT_OPTIONS = {
  ...COMMON_OPTIONS,
  type: { type: "string", short: "t" },
  message: { type: "string", short: "m" },
} as const satisfies ParseArgsConfig["options"];

/** Runs node's parseArgs, turning its errors (unknown option, missing value) into usage errors. */
function parse<O extends NonNullable<ParseArgsConfig["options"]>>(args: string[], options: O, usage: string) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message, usage);
  }
}

function checkpointType(value: string | undefined, usage: string): CheckpointType {
  if (value === undefined) throw new UsageError("--type is required", usage);
  // Accept any letter case ("lora"), store the canonical spelling.
  const found = CHECKPOINT_TYPES.find((t) => t.toLowerCase() === value.toLowerCase());
  if (!found) throw new UsageError(`--type: unknown checkpoint type "${value}"; use one of ${CHECKPOINT_TYPES.join(", ")}`, usage);
  return found;
}

function positiveNumber(option: string, value: string | undefined, fallback: number, usage: string, integer: boolean): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) {
    throw new UsageError(`${option}: "${value}" is not a positive ${integer ? "whole number" : "number"}`, usage);
  }
  return n;
}

function common(values: { server?: string | undefined; "api-key"?: string | undefined }, env: NodeJS.ProcessEnv, usage: string): CommonOptions {
  const rawServer = values.server ?? (env.DIFFGATE_URL || DEFAULT_SERVER);
  let url: URL;
  try {
    url = new URL(rawServer);
  } catch {
    throw new UsageError(`--server: "${rawServer}" is not a URL`, usage);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new UsageError(`--server: "${rawServer}" must be an http or https URL`, usage);
  if (url.search || url.hash) throw new UsageError(`--server: "${rawServer}" must not have a query or fragment`, usage);
  const apiKey = values["api-key"] ?? env.DIFFGATE_API_KEY;
  if (!apiKey) throw new UsageError("no API key: pass --api-key or set DIFFGATE_API_KEY", usage);
  return { server: url.href.replace(/\/+$/, ""), apiKey };
}

function onePositional(positionals: string[], what: string, usage: string): string {
  if (positionals.length === 0) throw new UsageError(`missing ${what}`, usage);
  if (positionals.length > 1) throw new UsageError(`unexpected argument "${positionals[1]}"`, usage);
  return positionals[0]!;
}

/** Parses `argv` (without node and the script); environment defaults come from `env`. */
export function parseCommand(argv: string[], env: NodeJS.ProcessEnv): Command {
  const [command, ...rest] = argv;
  if (command === undefined || command === "-h" || command === "--help" || command === "help") {
    if (command === "help" && rest[0] === "upload") return { kind: "help", text: UPLOAD_USAGE };
    if (command === "help" && rest[0] === "import") return { kind: "help", text: IMPORT_USAGE };
    if (command === undefined) throw new UsageError("missing command", MAIN_USAGE);
    return { kind: "help", text: MAIN_USAGE };
  }

  if (command === "upload") {
    const { values, positionals } = parse(rest, UPLOAD_OPTIONS, UPLOAD_USAGE);
    if (values.help) return { kind: "help", text: UPLOAD_USAGE };
    const file = onePositional(positionals, "<file>", UPLOAD_USAGE);
    const type = checkpointType(values.type, UPLOAD_USAGE);
    const partSizeMb = positiveNumber("--part-size-mb", values["part-size-mb"], DEFAULT_PART_SIZE_MB, UPLOAD_USAGE, false);
    const partSizeBytes = Math.ceil(partSizeMb * 1024 * 1024);
    if (partSizeBytes > MAX_PART_BYTES) throw new UsageError(`--part-size-mb: at most ${MAX_PART_BYTES / 1024 / 1024} (5 GiB, the store's largest part)`, UPLOAD_USAGE);
    const concurrency = positiveNumber("--concurrency", values.concurrency, DEFAULT_CONCURRENCY, UPLOAD_USAGE, true);
    if (concurrency > MAX_CONCURRENCY) throw new UsageError(`--concurrency: at most ${MAX_CONCURRENCY}`, UPLOAD_USAGE);
    if (values.name !== undefined && values.name.trim() === "") throw new UsageError("--name: must not be empty", UPLOAD_USAGE);
    return { kind: "upload", file, type, name: values.name, message: values.message, partSizeBytes, concurrency, ...common(values, env, UPLOAD_USAGE) };
  }

  if (command === "import") {
    const { values, positionals } = parse(rest, IMPORT_OPTIONS, IMPORT_USAGE);
    if (values.help) return { kind: "help", text: IMPORT_USAGE };
    const url = onePositional(positionals, "<url>", IMPORT_USAGE);
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new UsageError(`"${url}" is not a URL`, IMPORT_USAGE);
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw new UsageError(`"${url}" is not an http or https URL`, IMPORT_USAGE);
    const type = checkpointType(values.type, IMPORT_USAGE);
    return { kind: "import", url, type, message: values.message, ...common(values, env, IMPORT_USAGE) };
  }

  throw new UsageError(`unknown command "${command}"`, MAIN_USAGE);
}
