#!/usr/bin/env node
/** Entry point of the `diffgate` command: process wiring only (see run.ts). */
import { CancelledError } from "./errors.js";
import { EXIT_INTERRUPTED, run } from "./run.js";

const controller = new AbortController();
let interrupts = 0;
const onSignal = (signal: NodeJS.Signals) => {
  // The first signal cancels cleanly (an unfinished upload is removed); a second one exits at once.
  if (++interrupts > 1) process.exit(EXIT_INTERRUPTED);
  controller.abort(new CancelledError(`interrupted (${signal})`));
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);

process.exitCode = await run(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env, signal: controller.signal });
process.off("SIGINT", onSignal);
process.off("SIGTERM", onSignal);
