// Fills the config schema's defaults into a config, as ajv's `useDefaults` does: a declared
// property that is undefined gets a copy of its `default`, in the schema's order, and every
// value is then filled from its own schema (a default object's defaults included). The schema
// has no anyOf, oneOf, not or if (where ajv ignores defaults); test/unit/validators.test.ts
// holds it to that and to ajv's result, key order included, on every key of the schema.
// Why not ajv: its defaults come as a second compiled validator, 180 KB of code in init's
// bundle that boot parsed and compiled to fill in a few dozen values.
import { childSchema, type SchemaNode } from './schema.ts';

const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Fills `data` in place from `schema`'s defaults. */
export function fillDefaults(schema: SchemaNode, data: unknown): void {
  if (Array.isArray(data)) {
    data.forEach((item, i) => { const s = childSchema(schema, i); if (s) fillDefaults(s, item); });
    return;
  }
  if (!isMap(data)) return;
  for (const [key, s] of Object.entries((schema.properties ?? {}) as Record<string, SchemaNode>)) {
    if (data[key] === undefined && Object.hasOwn(s, 'default')) data[key] = structuredClone(s.default);
  }
  for (const [key, value] of Object.entries(data)) { const s = childSchema(schema, key); if (s) fillDefaults(s, value); }
}
