// What stage 1 sets for init's own process alone (builder/stage1/init.sh): taken out of the
// environment when the bundle loads (main.ts imports this module), before init starts any
// program, so none inherits it.

/** glibc's malloc thresholds, fixed for Node's heap; other programs keep glibc's defaults. */
export const OWN_ENV = ['GLIBC_TUNABLES'] as const;

for (const name of OWN_ENV) delete process.env[name];
