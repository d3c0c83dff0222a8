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
import { CONFIG_SCHEMA, type SchemaNode } from '../init/config/schema.ts';

// A CommonJS module whose exports and exports.default are both the function.
const standaloneCode = standalone.default;

/** The modules, by name; each is CommonJS whose module.exports is the validate function. */
export type CompiledValidators = Record<'config-check' | 'manifest' | 'root', string>;

/**
 * The config validators' code requires the format functions by this path, relative to
 * init/config/ (where the bundler resolves it).
 */
const FORMATS = _`require("./formats.ts").CONFIG_FORMATS`;

/**
 * The config schema with each key of the top level and of its `kiln:` section (and that
 * section itself) moved to `$defs` behind a `$ref`. Compiled with `inlineRefs: false`, each
 * key's checks are a function of their own. V8 compiles a function's bytecode when it is first
 * called, so a config compiles the checks of the keys it has, not the whole schema's: as one
 * function, the first validation at boot (the command line's, usually empty) compiled 130 KB
 * of checks. Verdicts and errors are the same; only an error's `schemaPath` differs, and
 * nothing on the node reads it.
 */
export function perKeySchema(schema: SchemaNode): SchemaNode {
  const out = structuredClone(schema);
  const defs: Record<string, SchemaNode> = {};
  const split = (node: SchemaNode, prefix: string) => {
    for (const [key, sub] of Object.entries<SchemaNode>(node.properties ?? {})) {
      // $defs names go into a JSON pointer, where '/' and '~' would need escaping.
      if (!/^[A-Za-z0-9_.-]+$/.test(key)) throw new Error(`config schema key '${key}' cannot name a $defs entry`);
      defs[prefix + key] = sub;
      node.properties[key] = { $ref: `#/$defs/${prefix}${key}` };
    }
  };
  if (out.properties?.kiln) split(out.properties.kiln, 'kiln.');
  split(out, '');
  if (out.$defs) throw new Error('the config schema has $defs of its own: merge them here');
  out.$defs = defs;
  return out;
}

/** Keywords that only annotate: they decide no verdict and no error's content. */
const ANNOTATION = (k: string) => k === 'description' || k === 'default' || k === 'examples' || k === 'title' || k === 'deprecated' || k.startsWith('x-');

/**
 * The schema without its annotations. The compiled checks keep as object literals the parts of
 * the schema they look things up in (the names of an object's keys, an enum's values, a list of
 * types), and each literal is the whole node there: with the descriptions and hints, 50 KB of
 * init's bundle, made into objects when the bundle loads. Only keywords are dropped, never a
 * property's name (a key called `default` stays); test/unit/validators.test.ts holds the
 * schema to the keywords walked here.
 */
export function withoutAnnotations(node: SchemaNode): SchemaNode {
  const out: SchemaNode = {};
  for (const [k, v] of Object.entries(node)) {
    if (ANNOTATION(k)) continue;
    if ((k === 'properties' || k === '$defs') && v && typeof v === 'object') out[k] = Object.fromEntries(Object.entries<SchemaNode>(v).map(([n, sub]) => [n, withoutAnnotations(sub)]));
    else if ((k === 'items' || k === 'additionalProperties' || k === 'propertyNames') && v && typeof v === 'object' && !Array.isArray(v)) out[k] = withoutAnnotations(v);
    else out[k] = v;
  }
  return out;
}

export function compileValidators(): CompiledValidators {
  const config = () => {
    const ajv = configAjv(false, { code: { source: true, formats: FORMATS }, inlineRefs: false });
    return standaloneCode(ajv, ajv.compile(withoutAnnotations(perKeySchema(CONFIG_SCHEMA))));
  };
  const channels = new Ajv2020({ ...MANIFEST_AJV_OPTIONS, code: { source: true } });
  return {
    'config-check': config(),
    manifest: standaloneCode(channels, channels.compile(MANIFEST_JSON_SCHEMA)),
    root: standaloneCode(channels, channels.compile(ROOT_JSON_SCHEMA)),
  };
}
