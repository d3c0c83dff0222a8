// Node's modules that init needs rarely, loaded when first used rather than when init starts
// (Node 20.16 and later). crypto: loading it is about a fifth of init's start-up on a slow
// board, and nothing on the way to ready needs it (random names come from /dev/urandom,
// safefs.ts). zlib: only gzip'd user-data and write_files use it, and loaded it holds about
// half a MiB for as long as init runs.
export const nodeCrypto = () => process.getBuiltinModule('node:crypto');
export const nodeZlib = () => process.getBuiltinModule('node:zlib');
