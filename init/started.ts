// Imported first by main.ts, so its one line runs before any other of init's code: the moment
// Node's own start ends and init's begins.

/** Seconds from this process's start to the first line of init's code. */
export const CODE_START_S = process.uptime();
