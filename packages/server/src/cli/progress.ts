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
  let last: { value: number; note: string } | null = null;
  const write = (value: number, note: string) =>
    process.stderr.write(`${label}: ${total > 0 ? Math.floor((value / total) * 100) : 0}% ${note}\n`);
  return {
    update(value: number, note = "") {
      last = { value, note };
      const now = Date.now();
      if (now - lastPrint < 2000) return;
      lastPrint = now;
      last = null;
      write(value, note);
    },
    // The final figures always reach the log, however soon after the previous line.
    stop: () => {
      if (last) write(last.value, last.note);
    },
  };
}
