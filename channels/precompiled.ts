// The manifest and trust root validators compiled to code. Empty in a source checkout
// (manifest.ts compiles the schemas on first use); the node's bundle gets the code
// builder/validators.ts makes, so it carries no schema compiler.
import type { ValidateFunction } from 'ajv';

export const PRECOMPILED: { manifest?: ValidateFunction; root?: ValidateFunction } = {};
