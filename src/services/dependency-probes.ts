export interface DependencyProbe {
  name: string;
  check(signal: AbortSignal): Promise<void>;
}

export interface ProbeResult {
  name: string;
  ok: boolean;
  latencyMs: number;
  detail?: string;
}

/** Runs every probe in parallel, each bounded by `timeoutMs`; never throws. */
export async function runProbes(probes: DependencyProbe[], timeoutMs: number): Promise<ProbeResult[]> {
  return Promise.all(
    probes.map(async (probe) => {
      const started = performance.now();
      const controller = new AbortController();
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          probe.check(controller.signal),
          new Promise((_, reject) => {
            timer = setTimeout(() => {
              controller.abort();
              reject(new Error(`no answer within ${timeoutMs} ms`));
            }, timeoutMs);
          }),
        ]);
        return { name: probe.name, ok: true, latencyMs: Math.round(performance.now() - started) };
      } catch (e) {
        const detail = e instanceof Error ? `${e.name === "Error" ? "" : `${e.name}: `}${e.message}` : String(e);
        return { name: probe.name, ok: false, latencyMs: Math.round(performance.now() - started), detail: detail.slice(0, 300) };
      } finally {
        clearTimeout(timer);
      }
    }),
  );
}
