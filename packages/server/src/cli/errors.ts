/** A mistake in how the CLI was called: printed as one line, exit status 1. */
export class CliError extends Error {}
