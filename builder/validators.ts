// The node's ajv validators compiled to code at build time (ajv's standalone export): the
// config schema and the channel manifest and trust root.
// The bundle carries this code instead of ajv's compiler, and boot spends no time compiling.
// The options come from the same functions the runtime compile uses (init/config/ajv.ts,
// channels/manifest.ts), so both give the same verdicts (test/unit/validators.test.ts).
import { _ } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import standalone from 'ajv/dist/standalone/index.js';
import { MANIFEST_AJV_OPTIONS, MANIFEST_JSON_SCHEMA, ROOT_JSON_SCHEMA } from '../channels/manifest.ts';
import { configAjv } from '../init/config/ajv.ts';
import { CONFIG_SCHEMA } from '../init/config/schema.ts';

// A CommonJS module whose exports and exports.default are both the function.
const standaloneCode = standalone.default;

/** The modules, by name; each is CommonJS whose module.exports is the validate function. */
export type CompiledValidators = Record<'config-check' | 'manifest' | 'root', string>;

/**
 * The config validators' code requires the format functions by this path, relative to
 * init/config/ (where the bundler resolves it).
 */
const FORMATS = _`require("./formats.ts").CONFIG_FORMATS`;

export function compileValidators(): CompiledValidators {
  const config = () => {
    const ajv = configAjv(false, { code: { source: true, formats: FORMATS } });
    return standaloneCode(ajv, ajv.compile(CONFIG_SCHEMA));
  };
  const channels = new Ajv2020({ ...MANIFEST_AJV_OPTIONS, code: { source: true } });
  return {
    'config-check': config(),
    manifest: standaloneCode(channels, channels.compile(MANIFEST_JSON_SCHEMA)),
    root: standaloneCode(channels, channels.compile(ROOT_JSON_SCHEMA)),
  };
}
