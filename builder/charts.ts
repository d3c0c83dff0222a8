// Packages kiln's own Helm charts (charts/<name>/) into byte-reproducible .tgz files and
// wraps each in the k3s HelmChart resource that init applies once k3s is ready.
import { createHash } from 'node:crypto';
import { lstat, readdir, readFile } from 'node:fs/promises';
import { basename, join, relative, sep } from 'node:path';
import { gzipSync, constants as zc } from 'node:zlib';
import * as tar from 'tar-stream';
import semver from 'semver';
import { isMap, isScalar, LineCounter, parseDocument, stringify } from 'yaml';
import { sealAnnotations, VERSION, type HelmChartObject, type HelmChartSpec } from '../init/addons/seal.ts';

export class ChartError extends Error {
  constructor(readonly file: string, readonly key: string | undefined, message: string) {
    super(message);
    this.name = 'ChartError';
  }
}

export interface ChartMeta { name: string; version: string; appVersion?: string }

// Same rule Helm applies to chart names; it also insists the folder carries that name.
const CHART_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** Reads and checks `<dir>/Chart.yaml`; errors name the file, the key and the line. */
export async function readChartMeta(dir: string): Promise<ChartMeta> {
  const file = join(dir, 'Chart.yaml');
  let text: string;
  try { text = await readFile(file, 'utf8'); } catch {
    throw new ChartError(file, undefined, `${file}: missing (every chart needs a Chart.yaml)`);
  }
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false });
  if (doc.errors.length) {
    const e = doc.errors[0];
    const p = lc.linePos(e.pos[0]);
    throw new ChartError(file, undefined, `${file}:${p.line}:${p.col}: not valid YAML: ${e.message.split('\n')[0]}`);
  }
  if (!isMap(doc.contents)) throw new ChartError(file, undefined, `${file}: must be a YAML mapping`);
  const map = doc.contents;
  const at = (key: string) => {
    const node = map.get(key, true);
    const pos = node && (node as any).range ? lc.linePos((node as any).range[0]) : undefined;
    return { node, where: pos ? `${file}:${pos.line}:${pos.col}` : file };
  };
  const str = (key: string, why: string): string => {
    const { node, where } = at(key);
    if (node === undefined) throw new ChartError(file, key, `${file}: key "${key}" is missing (${why})`);
    if (!isScalar(node) || typeof node.value !== 'string' || !node.value) {
      const shown = isScalar(node) ? JSON.stringify(node.value) : 'a non-scalar';
      throw new ChartError(file, key, `${where}: key "${key}" must be a non-empty string, got ${shown}${isScalar(node) && typeof node.value === 'number' ? ' (quote it)' : ''}`);
    }
    return node.value;
  };
  const apiVersion = str('apiVersion', 'kiln charts are Helm 3 charts: apiVersion: v2');
  if (apiVersion !== 'v2') throw new ChartError(file, 'apiVersion', `${at('apiVersion').where}: key "apiVersion" must be "v2", got ${JSON.stringify(apiVersion)}`);
  const name = str('name', 'the chart name');
  if (!CHART_NAME.test(name)) throw new ChartError(file, 'name', `${at('name').where}: key "name" ${JSON.stringify(name)} is not a valid chart name (lower-case letters, digits and "-")`);
  if (name !== basename(dir)) throw new ChartError(file, 'name', `${at('name').where}: key "name" is ${JSON.stringify(name)} but the folder is ${JSON.stringify(basename(dir))}; they must match`);
  const version = str('version', 'a SemVer 2 chart version');
  if (!semver.valid(version) || version.startsWith('v')) {
    throw new ChartError(file, 'version', `${at('version').where}: key "version" ${JSON.stringify(version)} is not a SemVer 2 version (e.g. 1.2.3)`);
  }
  const app = map.get('appVersion');
  return { name, version, ...(app !== undefined ? { appVersion: String(app) } : {}) };
}

// Editor and VCS leftovers never belong in a chart.
const skip = (name: string) => name.startsWith('.') || name.endsWith('~') || /\.(swp|orig|rej|bak)$/.test(name);

async function listFiles(dir: string): Promise<{ rel: string; abs: string; exec: boolean }[]> {
  const out: { rel: string; abs: string; exec: boolean }[] = [];
  const walk = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (skip(e.name)) continue;
      const abs = join(d, e.name);
      if (e.isDirectory()) { await walk(abs); continue; }
      const st = await lstat(abs);
      if (st.isSymbolicLink() || !st.isFile()) throw new ChartError(abs, undefined, `${abs}: only regular files can go into a chart (symlinks would make the package depend on the host)`);
      out.push({ rel: relative(dir, abs).split(sep).join('/'), abs, exec: (st.mode & 0o111) !== 0 });
    }
  };
  await walk(dir);
  // Byte order, not locale order: the same on every host.
  return out.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
}

/** The chart in `dir` as a .tgz whose bytes depend only on the file contents and `sourceDateEpoch`. */
export async function packageChart(dir: string, sourceDateEpoch: number): Promise<Buffer> {
  if (!Number.isInteger(sourceDateEpoch) || sourceDateEpoch < 0) throw new TypeError(`packageChart: sourceDateEpoch must be a non-negative integer, got ${sourceDateEpoch}`);
  const meta = await readChartMeta(dir);
  const values = join(dir, 'values.yaml');
  const valuesText = await readFile(values, 'utf8').catch(() => undefined);
  if (valuesText !== undefined) {
    const doc = parseDocument(valuesText);
    if (doc.errors.length) throw new ChartError(values, undefined, `${values}: not valid YAML: ${doc.errors[0].message.split('\n')[0]}`);
  }
  const files = await listFiles(dir);
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => chunks.push(c as Buffer));
  const done = new Promise<void>((resolve, reject) => { pack.on('end', resolve); pack.on('error', reject); });
  const mtime = new Date(sourceDateEpoch * 1000);
  for (const f of files) {
    const body = await readFile(f.abs);
    await new Promise<void>((resolve, reject) => pack.entry({
      name: `${meta.name}/${f.rel}`, size: body.length, mode: f.exec ? 0o755 : 0o644, mtime,
      uid: 0, gid: 0, uname: 'root', gname: 'root', type: 'file',
    }, body, (err) => (err ? reject(err) : resolve())));
  }
  pack.finalize();
  await done;
  const gz = gzipSync(Buffer.concat(chunks), { level: 9, strategy: zc.Z_DEFAULT_STRATEGY });
  // Node writes no file name and mtime 0; the OS byte is zlib's build-time guess, so pin it to "Unix".
  gz[9] = 3;
  return gz;
}

export interface HelmChartResourceOptions {
  name: string;
  /** Where the HelmChart object lives (k3s's helm-controller watches kube-system). */
  namespace?: string;
  tgz: Buffer;
  values?: object;
  /** The chart version: shown in `kubectl get helmchart` and recorded as kiln.io/version. */
  version: string;
  /** Release namespace; defaults to `namespace`. */
  targetNamespace?: string;
}

/** The HelmChart kiln ships for one add-on, sealed. */
export function helmChartResource(opts: HelmChartResourceOptions): HelmChartObject {
  const namespace = opts.namespace ?? 'kube-system';
  const spec: HelmChartSpec = {
    chartContent: opts.tgz.toString('base64'),
    targetNamespace: opts.targetNamespace ?? namespace,
    // Ignored by helm-controller when chartContent is set; kept for `kubectl get helmchart`.
    version: opts.version,
  };
  // valuesContent (a YAML string) rather than spec.values: every k3s release knows it, and an
  // unknown field would be pruned by the server and break the seal.
  if (opts.values && Object.keys(opts.values).length) spec.valuesContent = stringify(opts.values, { sortMapEntries: true });
  return {
    apiVersion: 'helm.cattle.io/v1',
    kind: 'HelmChart',
    metadata: {
      name: opts.name,
      namespace,
      labels: { 'app.kubernetes.io/managed-by': 'kiln' },
      annotations: { ...sealAnnotations(spec), [VERSION]: opts.version },
    },
    spec,
  };
}

export interface PackagedChart {
  name: string;
  version: string;
  tgz: Buffer;
  sha256: string;
  resource: HelmChartObject;
}

/** Packages every chart folder (one with a Chart.yaml) under `chartsDir`, in name order. */
export async function chartsForImage(chartsDir: string, sourceDateEpoch: number, values: Record<string, object> = {}): Promise<PackagedChart[]> {
  const out: PackagedChart[] = [];
  const entries = (await readdir(chartsDir, { withFileTypes: true })).filter((e) => e.isDirectory() && !skip(e.name)).map((e) => e.name).sort();
  for (const dirName of entries) {
    const dir = join(chartsDir, dirName);
    if (!(await lstat(join(dir, 'Chart.yaml')).then(() => true, () => false))) continue;
    const meta = await readChartMeta(dir);
    const tgz = await packageChart(dir, sourceDateEpoch);
    out.push({
      name: meta.name, version: meta.version, tgz, sha256: createHash('sha256').update(tgz).digest('hex'),
      resource: helmChartResource({ name: meta.name, version: meta.version, tgz, values: values[meta.name] }),
    });
  }
  return out;
}
