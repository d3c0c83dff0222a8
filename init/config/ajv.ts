// The config schema's ajv setup: one validator as written, one that fills defaults. The
// builder compiles the same setup to code (builder/validators.ts), so the node's verdicts are
// those of a source checkout.
import { Ajv, type Options, type ValidateFunction } from 'ajv';
import { CONFIG_FORMATS } from './formats.ts';
import { PRECOMPILED } from './precompiled.ts';
import { CONFIG_SCHEMA } from './schema.ts';

/** The ajv instance for the config schema; `extra` adds options (the builder's `code`). */
export function configAjv(useDefaults: boolean, extra: Options = {}): Ajv {
  const ajv = new Ajv({ allErrors: true, verbose: true, useDefaults, allowUnionTypes: true, strict: true, ...extra });
  ajv.addVocabulary(['x-aliases', 'x-warn-aliases', 'x-merge', 'x-merge-key', 'x-hint', 'x-string']);
  for (const [name, fn] of Object.entries(CONFIG_FORMATS)) ajv.addFormat(name, fn);
  return ajv;
}

const compiled: { check?: ValidateFunction; defaults?: ValidateFunction } = {};
/** `check` leaves the value as written; `defaults` fills in every default. */
export function configValidator(kind: 'check' | 'defaults'): ValidateFunction {
  return (compiled[kind] ??= PRECOMPILED[kind] ?? configAjv(kind === 'defaults').compile(CONFIG_SCHEMA));
}
