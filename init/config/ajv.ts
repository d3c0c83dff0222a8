// The config schema's ajv setup. The builder compiles the same setup to code
// (builder/validators.ts), so the node's verdicts are those of a source checkout. Defaults are
// filled from the schema (defaults.ts); `useDefaults` stays for the test that holds the two to
// the same result.
import { Ajv, type Options, type ValidateFunction } from 'ajv';
import { CONFIG_FORMATS } from './formats.ts';
import { PRECOMPILED } from './precompiled.ts';
import { CONFIG_SCHEMA } from './schema.ts';

/** The ajv instance for the config schema; `extra` adds options (the builder's `code`). */
export function configAjv(useDefaults: boolean, extra: Options = {}): Ajv {
  // Not verbose: an error's value and schema node are found from its path (parse.ts), so the
  // compiled checks carry no copies of the schema's parts for `parentSchema`.
  const ajv = new Ajv({ allErrors: true, useDefaults, allowUnionTypes: true, strict: true, ...extra });
  ajv.addVocabulary(['x-aliases', 'x-warn-aliases', 'x-merge', 'x-merge-key', 'x-hint', 'x-string']);
  for (const [name, fn] of Object.entries(CONFIG_FORMATS)) ajv.addFormat(name, fn);
  return ajv;
}

let compiled: ValidateFunction | undefined;
/** The config validator; it leaves the value as written. */
export function configValidator(): ValidateFunction {
  return (compiled ??= PRECOMPILED.check ?? configAjv(false).compile(CONFIG_SCHEMA));
}
