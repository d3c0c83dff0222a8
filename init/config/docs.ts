// docs/config.md, generated from the schema (and the merge order) so the reference cannot
// drift from what the node accepts. A unit test compares the committed file with this output.
import { MERGE_ORDER, PATHS } from './merge.ts';
import { IGNORED_TOP, IGNORED_USER, MAPPED, RUNCMD_NOTE } from './compat.ts';
import { CONFIG_SCHEMA, type SchemaNode } from './schema.ts';

const code = (v: unknown) => `\`${typeof v === 'string' ? (v === '' ? "''" : v) : JSON.stringify(v)}\``;

function typeText(n: SchemaNode): string {
  if (n.enum) return `one of ${n.enum.filter((v: unknown) => v !== '').map(code).join(', ')}`;
  const types: string[] = [].concat(n.type ?? []);
  return types.map((t) => {
    if (t === 'array') return `list of ${typeText(n.items ?? {})}`;
    if (t === 'object' && n['x-string']) return 'map of name to string';
    if (t === 'object' && typeof n.additionalProperties === 'object') return 'map of name to settings';
    if (t === 'object') return n.properties ? 'settings' : 'map';
    return t === 'string' && n.format ? `string (${n.format})` : t;
  }).join(' or ');
}

function entries(n: SchemaNode, path: string, out: string[]) {
  for (const [k, c] of Object.entries<SchemaNode>(n.properties ?? {})) {
    const p = path ? `${path}.${k}` : k;
    const facts = [`type: ${typeText(c)}`];
    if (c.default !== undefined) facts.push(`default: ${code(c.default)}`);
    if (c['x-aliases']) facts.push(`also spelled: ${c['x-aliases'].map(code).join(', ')}`);
    if (c['x-warn-aliases']) facts.push(`accepted with a warning: ${c['x-warn-aliases'].map(code).join(', ')}`);
    if (c['x-merge']) facts.push(`merge: ${c['x-merge'] === 'append' ? `append${c['x-merge-key'] ? ` (same ${c['x-merge-key']} replaces)` : ', duplicates dropped'}` : 'replace'}`);
    if (c['x-hint']) facts.push(`format: ${c['x-hint']}`);
    out.push(`### \`${p}\`\n\n${facts.map((f) => `- ${f}`).join('\n')}\n\n${c.description ?? ''}\n`);
    children(c, p, out);
  }
}

function children(c: SchemaNode, p: string, out: string[]) {
  if (c.properties) entries(c, p, out);
  if (c.items?.properties) entries(c.items, `${p}[]`, out);
  if (typeof c.additionalProperties === 'object' && c.additionalProperties.properties) entries(c.additionalProperties, `${p}.<name>`, out);
}

/** The whole markdown reference. */
export function renderDocs(): string {
  const keys: string[] = [];
  entries(CONFIG_SCHEMA, '', keys);
  return `# Node configuration reference

<!-- Generated from init/config/schema.ts. Do not edit; regenerate with:
     npx kiln config docs > docs/config.md -->

A node reads cloud-config style YAML (the \`#cloud-config\` first line is optional). k3os
files work as they are: the \`k3os:\` section is read as \`kiln:\`, and singular spellings
(\`sysctl\`, \`module\`, \`ssh_authorized_key\`, ...) are read as the plural keys. Check a file
on your workstation with \`npx kiln config validate FILE\`; every problem is printed as
\`FILE:LINE:COL key: message (fix)\`, a warning as \`FILE:LINE:COL warning: key: message (fix)\`.
Errors make validate exit 1, and on the node the source is not used (the last good config
is). Warnings (a form kiln maps, a key it ignores) do not: validate exits 0, unless
\`--strict\` is given, and the node reports them and applies the config.
Every problem of a file is reported in one pass. A \`- item\` line indented deeper than the
item above it is warned about: YAML reads it as more text of that item. A file starting with
\`#!\` is a script, not config: given as user-data, the node runs it at every boot after
\`run_cmd\` and \`runcmd\`; validate does not check its contents. \`runcmd\` keeps cloud-init's
meaning (once per instance) and \`run_cmd\` k3os's (every boot): for a file with \`runcmd\`,
validate prints \`FILE: note: ${RUNCMD_NOTE}\`.

\`\`\`yaml
#cloud-config
hostname: node-1
ssh_authorized_keys:
  - github:alice
kiln:
  sysctls:
    vm.swappiness: 10
  k3s_args: [server, --disable=traefik]
\`\`\`

## Forms from k3os, cloud-init and Kairos

Each is accepted with a warning that names what to write instead.

| written | read as |
|---|---|
${MAPPED.map(([a, b]) => `| \`${a}\` | ${b} |`).join('\n')}
| camelCase spellings (\`sshAuthorizedKeys\`, \`k3sArgs\`, ...) | the key they spell (listed under each key below as "accepted with a warning") |

Ignored, with a warning saying why:

| key | why |
|---|---|
${Object.entries(IGNORED_TOP).map(([k, v]) => `| \`${k}\` | ${v} |`).join('\n')}
${Object.entries(IGNORED_USER).map(([k, v]) => `| \`users[].${k}\` | ${v} |`).join('\n')}

## Sources and merge order

Lowest priority first; a later source overrides an earlier one:

${MERGE_ORDER.map(([name, what], i) => `${i + 1}. **${name}**: ${what}`).join('\n')}

Maps (such as \`kiln.sysctls\` or \`kiln.labels\`) merge key by key. Lists follow the rule
given as "merge" below: **append** adds the later source's items and drops exact duplicates
(for users and Wi-Fi networks, a later entry with the same name replaces the earlier one);
**replace** keeps only the list of the last source that sets it. Other values are replaced.
Defaults are filled in after merging, so a default never overrides an earlier source.

If any source has a problem, the node keeps running with the last good merged config
(\`${PATHS.lastGood}\`, JSON under a comment line that names its sources: JSON is YAML too)
and reports every problem; without one, it merges the sources that are good.
Public keys of \`github:\`/\`gitlab:\`/\`launchpad:\` users are cached in
\`${PATHS.keyCache}\` and used when the service cannot be reached.

## Kernel command line

\`kiln.<key>=<value>\` sets one key (\`k3os.<key>\` works too). \`<key>\` is the dotted path of
the key; keys of the \`kiln:\` section can leave out the section name:

| parameter | sets |
|---|---|
| \`kiln.hostname=node-1\` | \`hostname\` |
| \`kiln.channel=beta\` | \`kiln.channel\` (so does \`kiln.kiln.channel=beta\`) |
| \`kiln.sysctls.net.ipv4.ip_forward=1\` | one entry of a map (the rest of the path is its name) |
| \`kiln.k3s_args=server kiln.k3s_args=--disable=traefik\` | a list: each occurrence adds one item |
| \`kiln.install.silent\` | a boolean: no value means true |
| \`"kiln.ssh_authorized_keys=ssh-ed25519 AAAA... me"\` | double quotes keep spaces |
| \`kiln.config_url=https://host/node.yaml\` | not a key: a config file fetched and merged as a data source |

Lists of settings (\`write_files\`, \`kiln.wifi\`) cannot be set this way (\`kiln.users=NAME\` adds a user by name); use
\`kiln.config_url\`. \`ds=nocloud;s=URL\` (cloud-init's NoCloud seed) is read too.

Config from the network is root on the node, so \`kiln.config_url\`, the NoCloud seed URL and
\`kiln.install.config_url\` must be \`https://\`, or plain \`http://\` pinned to the file's SHA-256
(\`http://host/node.yaml#sha256=<64 hex digits>\`; for a seed, \`ds=nocloud;s=http://host/seed/#sha256=...\`
pins \`user-data\`, and \`meta-data\` is then not fetched), or plain \`http://\` allowed by
\`kiln.allow_insecure_http: true\` in the image's own config. \`kiln.key_services\` URLs take https,
or that opt-in. Every source may hold at most 1 MiB (gzip'd user-data: once decompressed).

## Keys

${keys.join('\n')}`;
}
