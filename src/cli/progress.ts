/**
 * Progress on stderr: a redrawn bar with percentage, bytes, throughput and ETA on a terminal; a
 * plain line every few seconds when stderr is a file or a pipe (logs, CI).
 */

export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(text: string): boolean;
}

export interface ProgressOptions {
  label: string;
  /** Total bytes; undefined when unknown (no percentage then). */
  total: number | undefined;
  stream: ProgressStream;
  /** Overrides stream.isTTY. */
  tty?: boolean;
  now?: () => number;
  /** Redraw period on a terminal (default 150 ms). */
  redrawMs?: number;
  /** Period of plain lines otherwise (default 5 s). */
  plainMs?: number;
}

export interface ProgressSnapshot {
  label: string;
  done: number;
  total: number | undefined;
  /** Bytes per second over the last few seconds. */
  rate: number;
  elapsedMs: number;
}

const MiB = 1024 * 1024;
const RATE_WINDOW_MS = 5_000;

export function formatMiB(bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`;
}

/** Throughput in MB/s (10^6 bytes a second, as network rates are given). */
export function formatRate(bytesPerSecond: number): string {
  return `${(bytesPerSecond / 1e6).toFixed(1)} MB/s`;
}

/** Elapsed time for summaries: "3.2 s" under a minute, then like {@link formatDuration}. */
export function formatElapsed(ms: number): string {
  return ms < 59_950 ? `${(Math.max(0, ms) / 1000).toFixed(1)} s` : formatDuration(ms);
}

/** A clock duration: "0:06", "12:34", "1:02:03". */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

function percent(s: ProgressSnapshot): string | undefined {
  if (s.total === undefined || s.total <= 0) return undefined;
  return `${Math.min(100, (s.done / s.total) * 100).toFixed(1)}%`;
}

function amounts(s: ProgressSnapshot): string {
  return s.total === undefined ? formatMiB(s.done) : `${(s.done / MiB).toFixed(1)}/${formatMiB(s.total)}`;
}

function eta(s: ProgressSnapshot): string | undefined {
  if (s.total === undefined || s.rate <= 0 || s.done >= s.total) return undefined;
  return `ETA ${formatDuration(((s.total - s.done) / s.rate) * 1000)}`;
}

/** One terminal line: `label [█████░░░░░]  45.2%  54.0/120.0 MiB  12.3 MB/s  ETA 0:12`, fitted to `columns`. */
export function renderBar(s: ProgressSnapshot, columns: number): string {
  const tail = [percent(s)?.padStart(6), amounts(s), formatRate(s.rate), eta(s)].filter(Boolean).join("  ");
  const room = columns - s.label.length - tail.length - 5;
  if (room < 10 || s.total === undefined) return `${s.label}  ${tail}`.slice(0, Math.max(0, columns - 1));
  const width = Math.min(40, room);
  const filled = Math.round(width * Math.min(1, s.done / Math.max(1, s.total)));
  return `${s.label} [${"█".repeat(filled)}${"░".repeat(width - filled)}] ${tail}`;
}

/** One log line: `label: 45.2% (54.0/120.0 MiB), 12.3 MB/s, ETA 0:12`. */
export function renderPlain(s: ProgressSnapshot): string {
  const pct = percent(s);
  return `${s.label}: ${pct ? `${pct} (${amounts(s)})` : amounts(s)}, ${[formatRate(s.rate), eta(s)].filter(Boolean).join(", ")}`;
}

export class Progress {
  private done = 0;
  private total: number | undefined;
  private readonly started: number;
  private readonly samples: Array<{ at: number; done: number }> = [];
  private readonly timer: NodeJS.Timeout;
  private readonly tty: boolean;
  private readonly now: () => number;
  private drawn = false;
  private finished = false;

  constructor(private readonly options: ProgressOptions) {
    this.total = options.total;
    this.tty = options.tty ?? options.stream.isTTY === true;
    this.now = options.now ?? Date.now;
    this.started = this.now();
    this.samples.push({ at: this.started, done: 0 });
    this.timer = setInterval(() => this.render(), this.tty ? (options.redrawMs ?? 150) : (options.plainMs ?? 5_000));
    this.timer.unref();
  }

  /** Adds (or, for a failed attempt, takes back) bytes. */
  add(delta: number): void {
    this.set(this.done + delta);
  }

  set(done: number): void {
    this.done = Math.max(0, done);
    const at = this.now();
    this.samples.push({ at, done: this.done });
    while (this.samples.length > 2 && this.samples[1]!.at <= at - RATE_WINDOW_MS) this.samples.shift();
  }

  setTotal(total: number | undefined): void {
    this.total = total;
  }

  snapshot(): ProgressSnapshot {
    const at = this.now();
    const first = this.samples[0]!;
    const span = at - first.at;
    const rate = span > 0 ? Math.max(0, ((this.done - first.done) / span) * 1000) : 0;
    return { label: this.options.label, done: this.done, total: this.total, rate, elapsedMs: at - this.started };
  }

  /** Prints a message on its own line without garbling the bar. */
  note(message: string): void {
    this.clearLine();
    this.options.stream.write(`${message}\n`);
    if (this.tty && !this.finished) this.render();
  }

  /** Stops redrawing; leaves the final bar on a terminal, then prints `summary` if given. */
  finish(summary?: string): void {
    if (this.finished) return;
    this.finished = true;
    clearInterval(this.timer);
    if (this.tty && this.drawn) {
      this.render(true);
      this.options.stream.write("\n");
    }
    this.drawn = false;
    if (summary) this.options.stream.write(`${summary}\n`);
  }

  /** Average throughput since the start. */
  averageRate(): number {
    const elapsed = this.now() - this.started;
    return elapsed > 0 ? (this.done / elapsed) * 1000 : 0;
  }

  private clearLine(): void {
    if (this.tty && this.drawn) this.options.stream.write("\r\x1b[K");
    this.drawn = false;
  }

  private render(force = false): void {
    if (this.finished && !force) return;
    const snapshot = this.snapshot();
    if (this.tty) {
      this.options.stream.write(`\r${renderBar(snapshot, this.options.stream.columns ?? 80)}\x1b[K`);
      this.drawn = true;
    } else {
      this.options.stream.write(`${renderPlain(snapshot)}\n`);
    }
  }
}
