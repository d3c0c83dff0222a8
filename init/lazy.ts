// Node's crypto module, loaded when first used rather than when init starts: loading it is
// about a fifth of init's start-up on a slow board, and nothing on the way to ready needs it
// (random names come from /dev/urandom, safefs.ts). Node 20.16 and later.
export const nodeCrypto = () => process.getBuiltinModule('node:crypto');
