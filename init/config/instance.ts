// cloud-init's runcmd runs once per instance: the instance id comes from the data source
// (NoCloud meta-data or `i=`, the config drive's uuid, EC2's instance-id), else the machine id,
// which lives as long as the data partition. The ids whose runcmd has started are kept, one a
// line, in RUNCMD_DONE on the data partition (not /etc, which is rebuilt; not /var/lib/cloud,
// which kiln does not have). Pure: the boot task (boot/tasks.ts) does the reading and writing.

/** The record of instances whose runcmd has started. */
export const RUNCMD_DONE = '/data/kiln/runcmd-instances';
/** Ids kept in the record (the oldest go first): a node that moves between more instances than
 *  this runs runcmd again for one it met long ago. */
export const MAX_INSTANCES = 64;
/** Longest instance id taken from a data source; a longer one is passed over. */
export const MAX_ID_LENGTH = 256;

/** An instance id a data source may give: printable, one line, not too long. */
export function instanceIdProblem(id: string): string | undefined {
  if (!id.trim()) return 'is empty';
  if (id.length > MAX_ID_LENGTH) return `is longer than ${MAX_ID_LENGTH} characters`;
  if (/[\x00-\x1f\x7f]/.test(id)) return 'holds a control character or a line break';
  return undefined;
}

/** The instance id in force: the data source's, else `machine:<machine id>`. */
export function instanceOf(fromSource: { id: string; origin: string } | undefined, machineId: string): { id: string; origin: string } {
  if (fromSource && !instanceIdProblem(fromSource.id)) return { id: fromSource.id.trim(), origin: fromSource.origin };
  return { id: `machine:${machineId}`, origin: 'the machine id (no data source gave an instance id)' };
}

export type RuncmdDecision =
  | { run: false; why: string }
  | { run: true; why: string; record: string };

/**
 * Whether runcmd runs this boot. `done`: the record's text (empty when missing); `chosenOk`:
 * the config was chosen without a problem (otherwise the last good config is a stand-in, and
 * running its runcmd would use up this instance's one run). `record`: the text to write, with
 * this id added, BEFORE the commands start.
 */
export function decideRuncmd(o: { commands: number; chosenOk: boolean; id: string; origin: string; done: string }): RuncmdDecision {
  if (!o.commands) return { run: false, why: 'no runcmd' };
  const ids = o.done.split('\n').filter(Boolean);
  if (ids.includes(o.id)) return { run: false, why: `already ran for instance ${o.id} (from ${o.origin})` };
  if (!o.chosenOk) return { run: false, why: `waits for a config without problems (instance ${o.id}, from ${o.origin})` };
  const record = [...ids, o.id].slice(-MAX_INSTANCES).join('\n') + '\n';
  return { run: true, why: `first boot of instance ${o.id} (from ${o.origin})`, record };
}
