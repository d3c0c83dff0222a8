// The config validators compiled to code. In a source checkout (tests, the workstation CLI
// run through tsx) this module is empty and init/config/ajv.ts compiles the schema on first
// use; builder/bundle.ts replaces it with the code builder/validators.ts makes, so the node
// carries no schema compiler and spends no boot time compiling.
import type { ValidateFunction } from 'ajv';

export const PRECOMPILED: { check?: ValidateFunction } = {};
