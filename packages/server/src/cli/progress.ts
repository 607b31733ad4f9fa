import cliProgress from "cli-progress";

/**
 * Progress for long CLI work on stderr: a bar on a terminal, a line every few seconds
 * otherwise (CI logs, pipes), nothing with --json so scripts read clean output.
 */
export function createProgress(label: string, total: number, options: { quiet: boolean }) {
  if (options.quiet) return { update: (_value: number, _note?: string) => {}, stop: () => {} };
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      { format: `${label} [{bar}] {percentage}% {note}`, stream: process.stderr, hideCursor: true },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0, { note: "" });
    return { update: (value: number, note = "") => bar.update(value, { note }), stop: () => bar.stop() };
  }
  let lastPrint = 0;
  return {
    update(value: number, note = "") {
      const now = Date.now();
      if (now - lastPrint < 2000) return;
      lastPrint = now;
      process.stderr.write(`${label}: ${total > 0 ? Math.floor((value / total) * 100) : 0}% ${note}\n`);
    },
    stop: () => {},
  };
}
