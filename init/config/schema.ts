// The node configuration schema: the one place every key is declared. Validation
// (parse.ts), merging (merge.ts, through `x-merge`), the kernel command line (through the
// types), key aliases (`x-aliases`) and docs/config.md (docs.ts) all derive from it.
//
// Annotations beyond JSON Schema draft-07:
//   x-aliases  other spellings of a key (k3os's singular forms, cloud-init's names);
//              renamed before validation, never reported as errors.
//   x-warn-aliases  spellings k3os tolerated (camelCase); renamed like x-aliases, with a
//              warning naming the canonical key.
//   x-merge    for lists: 'append' (later sources add items, duplicates dropped) or
//              'replace' (the last source that sets the list wins). Maps always merge deeply.
//   x-merge-key  for 'append' lists of maps: a later item with the same value of this
//              key replaces the earlier item instead of being added.
//   x-hint     the fix printed when a value does not match the pattern or format.
//   x-string   map values may be written as numbers or booleans; they become strings.

import { HOSTNAME_PATTERN } from './hostname.ts';

const s = (description: string, extra: Record<string, unknown> = {}) => ({ type: 'string', default: '', description, ...extra });
const b = (description: string, def = false) => ({ type: 'boolean', default: def, description });
const list = (merge: 'append' | 'replace', items: Record<string, unknown>, description: string, extra: Record<string, unknown> = {}) =>
  ({ type: 'array', items, default: [], 'x-merge': merge, description, ...extra });
const strMap = (description: string, keys: Record<string, unknown>) => ({
  type: 'object', default: {}, 'x-string': true, description,
  propertyNames: keys,
  additionalProperties: { type: ['string', 'number', 'boolean'] },
});

const IP_HINT = "an IPv4 or IPv6 address, e.g. '192.168.1.1' or 'fd00::1'";
const AUTH_KEY = {
  type: 'string',
  // a public key line (options allowed before the type), or a user on a key service
  pattern: '^((github|gh|gitlab|gl|launchpad|lp):[A-Za-z0-9][A-Za-z0-9._-]*|(.+ )?(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\\.com) [A-Za-z0-9+/]+={0,3}( .*)?)$',
  'x-hint': "a public key line like 'ssh-ed25519 AAAA... me@laptop', or github:USER, gitlab:USER, launchpad:USER",
};
const IMPORT_ID = {
  type: 'string',
  pattern: '^((github|gh|gitlab|gl|launchpad|lp):)?[A-Za-z0-9][A-Za-z0-9._-]*$',
  'x-hint': 'gh:USER (GitHub), gl:USER (GitLab) or lp:USER (Launchpad; a bare USER means Launchpad too)',
};
const COMMAND = {
  type: ['string', 'array'], items: { type: 'string' }, minItems: 1,
  'x-hint': "a shell command line such as 'echo hi', or an argv list such as [echo, hi]",
};
const commands = (when: string, aliases: string[] = [], warnAliases: string[] = []) => list('append', COMMAND,
  `Commands run ${when}, in order. Each is a shell command line (run by /bin/sh -c) or an argv list (run without a shell).`,
  { ...(aliases.length ? { 'x-aliases': aliases } : {}), ...(warnAliases.length ? { 'x-warn-aliases': warnAliases } : {}) });

export const ENCODINGS = ['text', 'text/plain', '', 'b64', 'base64', 'gz', 'gzip', 'gz+base64', 'gzip+base64', 'gz+b64', 'gzip+b64'] as const;
export const DATA_SOURCES = ['nocloud', 'cdrom', 'ec2', 'aws', 'openstack', 'gcp', 'hetzner', 'digitalocean', 'vultr', 'scaleway', 'packet'] as const;
export const CHANNELS = ['beta', 'rc', 'stable'] as const;

const NAME = { type: 'string', pattern: '^[a-z_][a-z0-9_-]{0,31}$', 'x-hint': 'lower case letters, digits, _ and -, starting with a letter or _' };
const USER = {
  type: ['string', 'object'],
  description: "A user to create: a name, or an object. The name 'default' stands for the built-in 'kiln' user. Users are applied at every boot, from config: a user kiln made keeps the uid that owns its home directory.",
  required: ['name'], additionalProperties: false,
  properties: {
    name: { ...NAME, description: 'Login name.' },
    gecos: s("The comment field of /etc/passwd (the user's full name).", { pattern: '^[^:\\n]*$', maxLength: 256, 'x-hint': "text without ':' or line breaks" }),
    homedir: s('Home directory; empty: /home/NAME. Made (owned by the user, mode 0750) when missing, except for system users; a directory that exists keeps its owner (except /home/NAME when homedir is empty: a newly made user is given it).', { pattern: '^(/[^:\\n]*)?$', maxLength: 256, 'x-hint': "an absolute path such as '/home/alice'" }),
    primary_group: s("Primary group; empty: a group named after the user. Made when missing.", { pattern: '^([a-z_][a-z0-9_-]{0,31})?$', 'x-hint': 'a group name: lower case letters, digits, _ and -' }),
    groups: { type: ['string', 'array'], items: { type: 'string' }, default: [], description: "Supplementary groups: a list, or cloud-init's comma-separated string. A group that does not exist is made." },
    uid: { type: 'integer', minimum: 0, maximum: 4294967294, default: 0, description: 'User id; 0 (the default): the first free one from 1000 (system users: from 999 down), or the owner of an existing home. One another user has is reported and a free one used.' },
    system: b('A system user: a uid below 1000 and no home directory made.'),
    no_create_home: b('Make no home directory (the passwd entry still names one).'),
    expiredate: s("Date the account expires, 'YYYY-MM-DD' (the expire field of /etc/shadow, as useradd --expiredate sets it); empty: never.", { pattern: '^([0-9]{4}-[0-9]{2}-[0-9]{2})?$', 'x-hint': "a date such as '2031-12-31'" }),
    inactive: { type: ['string', 'integer'], pattern: '^[0-9]{0,5}$', minimum: 0, maximum: 99999, default: '', 'x-hint': "a number of days such as '30'", description: "Days after a password expires until the account is disabled (the inactive field of /etc/shadow, as useradd --inactive sets it); kiln sets no password expiry, so it matters only to a password given an expiry by hand." },
    shell: s('Login shell; empty for the image default (/bin/sh). The image has /bin/sh and /bin/ash (busybox); a shell the node does not have is replaced by /bin/sh, with a warning at boot.'),
    lock_passwd: b("Disable password login for this user (the hash is kept behind a '!', as passwd -l does). Keys still log in.", true),
    passwd: s("Password hash (crypt(3) format, e.g. '$6$...'); empty for none. Plain text is not taken: the user then has no password, with a warning at boot.", { 'x-aliases': ['hashed_passwd'] }),
    ssh_authorized_keys: list('append', AUTH_KEY, 'Public keys (or github:USER, gitlab:USER) allowed to log in as this user.', { 'x-aliases': ['ssh_authorized_key'], 'x-warn-aliases': ['sshAuthorizedKeys'] }),
    ssh_import_id: list('append', IMPORT_ID, 'Key service users whose public keys may log in as this user (gh:USER, gl:USER, lp:USER).'),
  },
};

const GROUP = {
  type: 'object', additionalProperties: false, required: ['name'],
  description: "A group to make. cloud-init's forms are read too: a name, `{NAME: [MEMBER, ...]}`, or a comma-separated string of names.",
  properties: {
    name: { ...NAME, description: 'Group name.' },
    members: list('append', NAME, 'Users added to the group (users that do not exist, after `users` is applied, are left out with a warning at boot).'),
  },
};

const WRITE_FILE = {
  type: 'object', additionalProperties: false, required: ['path'],
  description: 'A file written at boot, before init_cmd runs.',
  properties: {
    path: { type: 'string', pattern: '^/', 'x-hint': "an absolute path such as '/etc/motd'", description: 'Absolute path of the file.' },
    content: s('File content, encoded as `encoding` says.'),
    encoding: { enum: ENCODINGS, default: 'text', description: "How `content` is encoded: text (also '' and text/plain), base64 (b64), gzip+base64 (gz+base64, gz+b64, gzip+b64) or gzip (gz; the same as gzip+base64 since YAML text cannot hold raw bytes)." },
    owner: { type: 'string', default: 'root:root', pattern: '^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$', 'x-hint': "USER or USER:GROUP, e.g. 'root:root'", description: 'Owner as USER or USER:GROUP (names or numeric ids).' },
    permissions: { type: 'string', default: '0644', pattern: '^0?[0-7]{3,4}$', 'x-hint': "an octal string in quotes, e.g. '0644' (unquoted 0644 is read as the number 644)", description: 'Mode as an octal string.' },
    append: b('Append to the file instead of replacing it.'),
  },
};

const INTERFACE = {
  type: 'object', additionalProperties: false,
  description: 'Settings for one network interface. Give `dhcp: true`, or static `addresses` (or both).',
  properties: {
    dhcp: b('Get an address by DHCP (v4) and SLAAC (v6).'),
    addresses: list('replace', { type: 'string', format: 'cidr', 'x-hint': "an address with its prefix length, e.g. '192.168.1.10/24' or 'fd00::10/64'" }, 'Static addresses in CIDR notation.'),
    gateway: s('Default gateway for the static addresses; empty for none.', { format: 'ip-or-empty', 'x-hint': IP_HINT }),
    dns: list('replace', { type: 'string', format: 'ip', 'x-hint': IP_HINT }, 'Name servers learnt through this interface (added to kiln.dns_nameservers).'),
    mtu: { type: 'integer', minimum: 68, maximum: 65535, default: 1500, description: 'Maximum transmission unit in bytes.' },
  },
};

const INSTALL = {
  type: 'object', additionalProperties: false, default: {},
  description: 'Unattended installation from the live ISO (`kiln install` reads these; any left empty is asked for unless `silent`).',
  properties: {
    device: s("Disk to install to, e.g. '/dev/sda'; it is erased. 'auto': the one disk that is neither removable nor the boot medium (refused, listing the candidates, when there is not exactly one).", { pattern: '^(/dev/.+|auto)?$', 'x-hint': "a block device path such as '/dev/sda', or 'auto'" }),
    config_url: s('URL of the config copied to the installed data partition: https://, file:///PATH, or http:// with a pin (#sha256=HEX at the end) or kiln.allow_insecure_http.', { pattern: '^((https?|file)://.+)?$', 'x-hint': "an https URL such as 'https://example.com/node.yaml', or file:///PATH" }),
    iso_url: s('URL of the ISO to install from instead of the booted medium.'),
    silent: b('Ask nothing; fail if a needed answer is missing.'),
    force: b('Install even if the device already holds partitions.'),
    force_efi: b('Install the UEFI boot loader even when booted in BIOS mode.'),
    no_format: b('Keep the existing data partition (reinstall the system only).'),
    power_off: b('Power off when the installation is done.'),
    reboot: b('Reboot into the installed system when done.'),
    debug: b('Log every step of the installer.'),
    tty: s("Console for the installed system, e.g. 'ttyS0'; empty for the current one."),
    server_url: s('kiln.server_url written into the installed config.'),
    token: s('kiln.token written into the installed config.'),
    password: s('kiln.password written into the installed config.'),
  },
};

const KILN = {
  type: 'object', additionalProperties: false, default: {},
  'x-aliases': ['k3os'],
  description: 'Settings of the kiln system (k3os users: this is the `k3os:` section, which is accepted too).',
  properties: {
    data_sources: list('replace', { enum: DATA_SOURCES }, "Where to look for cloud config besides the local files: nocloud (`ds=nocloud;s=URL` and a CIDATA volume), cdrom (an attached config drive), ec2/aws, openstack, gcp, hetzner, digitalocean, vultr, scaleway, packet. Empty: nocloud only.", { 'x-aliases': ['data_source', 'datasource'], 'x-warn-aliases': ['dataSources'] }),
    modules: list('append', { type: 'string', pattern: '^[A-Za-z0-9_-]+$', 'x-hint': "a kernel module name such as 'br_netfilter'" }, 'Kernel modules loaded at boot (with their dependencies), after the ones k3s needs.', { 'x-aliases': ['module'] }),
    sysctls: { ...strMap('Kernel parameters set at boot, e.g. `net.ipv4.ip_forward: 1`.', { pattern: '^[A-Za-z0-9_*-]+([./][A-Za-z0-9_*-]+)+$', 'x-hint': "a sysctl name such as 'net.ipv4.ip_forward'" }), 'x-aliases': ['sysctl'] },
    dns_nameservers: list('replace', { type: 'string', format: 'ip', 'x-hint': IP_HINT }, 'Name servers; empty: those from DHCP.', { 'x-aliases': ['dns_nameserver'], 'x-warn-aliases': ['dnsNameservers'] }),
    ntp_servers: list('replace', { type: 'string', minLength: 1, maxLength: 259, pattern: '^(|([Nn][Tt][Ss]://)?[A-Za-z0-9]([A-Za-z0-9.:-]*[A-Za-z0-9])?)$', 'x-hint': "a host name or address, e.g. 'time.example.com' or '192.168.1.1'; 'nts://time.cloudflare.com' for NTS" }, 'NTP servers for chronyd; `nts://HOST` uses NTS (authenticated time; the server must offer it). Empty: those from DHCP, else pool.ntp.org.', { 'x-aliases': ['ntp_server'], 'x-warn-aliases': ['ntpServers'], maxItems: 16 }),
    wifi: list('append', {
      type: 'object', additionalProperties: false, required: ['name'],
      properties: {
        name: { type: 'string', minLength: 1, maxLength: 32, description: 'Network name (SSID).' },
        passphrase: s('WPA passphrase; empty for an open network.', { 'x-warn-aliases': ['password'], pattern: '^(|.{8,63}|[0-9a-fA-F]{64})$', 'x-hint': '8 to 63 characters, or 64 hex digits; empty for an open network' }),
      },
    }, 'Wi-Fi networks to join with wpa_supplicant on the first wireless link (DHCP once associated), tried in order. A later entry with the same name replaces the earlier one. Needs an image with wpasupplicant and the adapter\'s firmware.', { 'x-merge-key': 'name', maxItems: 32 }),
    password: s("Password of root, plain or crypt(3) hashed ('$6$...'), for the console (and over SSH only with ssh.password_login: true); empty: no password login for root."),
    ssh: {
      type: 'object', additionalProperties: false, default: {},
      description: 'The SSH server (dropbear).',
      properties: {
        password_login: b('Accept passwords over SSH (kiln.password for root, users[].passwd for the others). Off: SSH takes keys only and passwords work on the console, as on Fedora CoreOS and Flatcar.'),
      },
    },
    allow_insecure_http: b("Allow plain http:// for kiln.config_url, the NoCloud seed URL, kiln.install.config_url and key_services without a pin. Only honoured in the image's own config (/usr/lib/kiln/config.yaml); anywhere else it is an error. Without it such URLs must be https://, or http:// ending in #sha256=<the file's SHA-256> (not possible for key_services)."),
    key_services: {
      type: 'object', additionalProperties: false, default: {},
      description: 'Where github:, gitlab: and launchpad: keys are fetched from (e.g. a GitHub Enterprise server).',
      properties: {
        github: s('Base URL for github:USER keys (USER.keys is appended); empty: https://github.com.', { pattern: '^(https?://.+)?$', 'x-hint': "an http(s) URL such as 'https://github.example.com'" }),
        gitlab: s('Base URL for gitlab:USER keys; empty: https://gitlab.com.', { pattern: '^(https?://.+)?$', 'x-hint': "an http(s) URL such as 'https://gitlab.example.com'" }),
        launchpad: s('Base URL for launchpad:USER keys; empty: https://launchpad.net.', { pattern: '^(https?://.+)?$', 'x-hint': "an http(s) URL" }),
      },
    },
    environment: strMap('Environment variables for k3s and boot commands, e.g. http_proxy.', { pattern: '^[A-Za-z_][A-Za-z0-9_]*$', 'x-hint': 'letters, digits and _, not starting with a digit' }),
    server_url: s("URL of a k3s server to join as an agent, e.g. 'https://10.0.0.1:6443'; empty: run a server.", { 'x-warn-aliases': ['serverUrl'], pattern: '^(https://.+)?$', 'x-hint': "an https URL such as 'https://10.0.0.1:6443'" }),
    token: s('Cluster join token (k3s --token); empty on the first server: one is generated.'),
    labels: { ...strMap('Kubernetes node labels.', { pattern: '^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$', 'x-hint': "a label key such as 'region' or 'example.com/tier'" }), 'x-aliases': ['label'] },
    taints: list('append', { type: 'string', pattern: '^[^=:\\s]+(=[^:\\s]*)?:(NoSchedule|PreferNoSchedule|NoExecute)$', 'x-hint': "KEY[=VALUE]:EFFECT with EFFECT one of NoSchedule, PreferNoSchedule, NoExecute, e.g. 'dedicated=db:NoSchedule'" }, 'Kubernetes node taints.', { 'x-aliases': ['taint'] }),
    k3s_args: list('replace', { type: 'string' }, "Arguments for k3s. Empty: 'server' (or 'agent' when server_url is set). A list starting with 'server' or 'agent' chooses the role.", { 'x-aliases': ['k3s_arg'], 'x-warn-aliases': ['k3sArgs'] }),
    channel: { enum: CHANNELS, default: 'stable', description: 'Update channel the node follows.' },
    updates: {
      type: 'object', additionalProperties: false, default: {},
      description: 'Automatic updates from a published release tree (see channels/README.md).',
      properties: {
        url: s("Base URL of the release tree (the channel name is appended): http(s), or file:///PATH for a tree copied onto the node (air-gapped sites); empty: no automatic updates.", { pattern: '^((https?://|file:///).+)?$', 'x-hint': "an http(s) URL such as 'https://releases.example.com/kiln', or file:///data/channels" }),
        poll_minutes: { type: 'integer', minimum: 1, default: 240, description: 'Minutes between checks (a random delay of up to half of it is added).' },
        // Checked by parse.ts with the updater's own parser (update/window.ts); the length cap
        // keeps that parser's work small.
        window: s("When reboots may happen, e.g. 'Sat 02:00-04:00' or 'Mon-Fri 01:00-05:00; Sun 00:00-24:00' (local time); empty: any time.", { maxLength: 512, 'x-hint': "[DAYS] HH:MM-HH:MM in local time, several joined with ';', e.g. 'Sat 02:00-04:00' or 'Mon-Fri 22:00-23:30; Sun 00:00-24:00'; empty for any time" }),
        reboot_lock: { enum: ['auto', 'lease', 'fleetlock', 'none'], default: 'auto', description: "Which lock lets one node at a time reboot into an update. auto: the FleetLock server when fleetlock_url is set (it serves every node, agents too, so the fleet shares one lock), otherwise the Lease kiln-system/kiln-reboot when k3s is ready on this node and it holds the admin kubeconfig (servers), otherwise no lock. lease: always the Lease; without it (k3s down, or an agent) the reboot waits. fleetlock: always the FleetLock server. none: reboot without asking. The lock is given back once the node is healthy after the reboot; a Lease whose holder never returns is free again after 30 minutes." },
        fleetlock_url: s('FleetLock server that allows one node at a time to reboot (see reboot_lock); empty: none.', { pattern: '^(https?://.+)?$', 'x-hint': 'an http(s) URL' }),
        fleetlock_group: s("FleetLock group of this node; empty: 'default'."),
        canary: b('Take every release as soon as it is published, ignoring the staged rollout.'),
        drain: b("Before rebooting into an update, cordon this node and evict its pods (k3s kubectl drain, on servers; an agent has no admin credentials and reboots undrained). A drain that does not finish within drain_timeout_s is undone and the reboot waits for the next poll. The node is uncordoned once it is healthy again.", true),
        drain_timeout_s: { type: 'integer', minimum: 10, default: 300, description: 'Seconds a drain may take (kubectl drain --timeout).' },
      },
    },
    manifests: {
      type: 'object', additionalProperties: false, default: {},
      description: 'Kubernetes manifests on the data partition (/var/lib/kiln/manifests).',
      properties: { auto_apply: b('Apply the manifests in the folder when k3s is up (opt-in).') },
    },
    network: {
      type: 'object', additionalProperties: false, default: {},
      description: 'Network settings. Without any, every wired interface uses DHCP.',
      properties: {
        interfaces: {
          type: 'object', default: {}, description: "Per-interface settings, keyed by interface name (e.g. 'eth0').",
          propertyNames: { pattern: '^[A-Za-z0-9_.:-]{1,15}$', 'x-hint': 'an interface name of at most 15 characters, e.g. eth0' },
          additionalProperties: INTERFACE,
        },
      },
    },
    install: INSTALL,
  },
};

export const CONFIG_SCHEMA: SchemaNode = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  $id: 'https://kiln.dev/schemas/config.json',
  title: 'kiln node configuration',
  type: 'object', additionalProperties: false,
  description: 'A cloud-config style YAML file (the `#cloud-config` first line is optional).',
  properties: {
    hostname: s('Host name of the node (RFC 1123, at most 64 characters); empty: kiln-XXXXXX, chosen once from the machine id.', {
      pattern: `^$|${HOSTNAME_PATTERN}`,
      'x-hint': "letters, digits and '-' (dots between labels), at most 64 characters, e.g. 'node-1'",
    }),
    ssh_authorized_keys: list('append', AUTH_KEY, "Public keys allowed to log in as root; github:USER / gitlab:USER / launchpad:USER fetch that user's published keys at boot.", { 'x-aliases': ['ssh_authorized_key'], 'x-warn-aliases': ['sshAuthorizedKeys'] }),
    ssh_import_id: list('append', IMPORT_ID, "cloud-init's form of key service users for root: gh:USER, gl:USER, lp:USER."),
    users: list('append', USER, 'Extra users to create (cloud-init style). A later entry with the same name replaces the earlier one.', { 'x-merge-key': 'name' }),
    groups: list('append', GROUP, "Groups to make (cloud-init style), before the users. A later entry with the same name replaces the earlier one.", { 'x-merge-key': 'name' }),
    write_files: list('append', WRITE_FILE, 'Files written at boot, in order.', { 'x-warn-aliases': ['writeFiles'] }),
    init_cmd: commands('early at boot, before the network is up', [], ['initCmd']),
    boot_cmd: commands('at every boot once the network is up, before k3s starts', ['bootcmd'], ['bootCmd']),
    run_cmd: commands("at every boot after k3s has started (k3os's run_cmd)", [], ['runCmd']),
    runcmd: { ...commands("once per instance, as cloud-init's runcmd: after run_cmd, at the first boot of each instance id"), description: "Commands run once per instance, as cloud-init's runcmd does (run_cmd runs at every boot). After run_cmd, at the first boot with a new instance id: the NoCloud `instance-id` (meta-data, or `i=` in `ds=nocloud`), the config drive's `uuid`, or EC2's instance-id; without one, the machine id, which is made at first boot and kept on the data partition (so: once per installation). The instance is marked done on the data partition (/data/kiln/runcmd-instances; the live ISO keeps its data in memory, so there runcmd runs at every boot) just before the commands start, so a command that reboots does not run again, and one that fails is not retried. When the config has problems (the last good one is in force), runcmd waits for a boot whose config is good. Each is a shell command line (run by /bin/sh -c) or an argv list (run without a shell)." },
    kiln: KILN,
  },
};

// ---- Types of a normalised, defaults-filled config (parse.ts normalises the input). ----

export type Command = string | string[];
export type Encoding = 'text' | 'base64' | 'gzip+base64';
export type DataSource = (typeof DATA_SOURCES)[number];
export type Channel = (typeof CHANNELS)[number];

export interface User {
  name: string;
  gecos: string;
  homedir: string;
  primary_group: string;
  groups: string[];
  uid: number;
  system: boolean;
  no_create_home: boolean;
  expiredate: string;
  inactive: string;
  shell: string;
  lock_passwd: boolean;
  passwd: string;
  ssh_authorized_keys: string[];
  ssh_import_id: string[];
}
export interface Group { name: string; members: string[] }
export interface WriteFile { path: string; content: string; encoding: Encoding; owner: string; permissions: string; append: boolean }
export interface Wifi { name: string; passphrase: string }
export interface Interface { dhcp: boolean; addresses: string[]; gateway: string; dns: string[]; mtu: number }
export interface Install {
  device: string; config_url: string; iso_url: string; silent: boolean; force: boolean; force_efi: boolean;
  no_format: boolean; power_off: boolean; reboot: boolean; debug: boolean; tty: string;
  server_url: string; token: string; password: string;
}
export interface KilnSection {
  data_sources: DataSource[];
  modules: string[];
  sysctls: Record<string, string>;
  dns_nameservers: string[];
  ntp_servers: string[];
  wifi: Wifi[];
  password: string;
  ssh: { password_login: boolean };
  allow_insecure_http: boolean;
  key_services: { github: string; gitlab: string; launchpad: string };
  environment: Record<string, string>;
  server_url: string;
  token: string;
  labels: Record<string, string>;
  taints: string[];
  k3s_args: string[];
  channel: Channel;
  updates: { url: string; poll_minutes: number; window: string; reboot_lock: 'auto' | 'lease' | 'fleetlock' | 'none'; fleetlock_url: string; fleetlock_group: string; canary: boolean; drain: boolean; drain_timeout_s: number };
  manifests: { auto_apply: boolean };
  network: { interfaces: Record<string, Interface> };
  install: Install;
}
export interface KilnConfig {
  hostname: string;
  ssh_authorized_keys: string[];
  ssh_import_id: string[];
  users: User[];
  groups: Group[];
  write_files: WriteFile[];
  init_cmd: Command[];
  boot_cmd: Command[];
  run_cmd: Command[];
  runcmd: Command[];
  kiln: KilnSection;
}

type DeepPartial<T> = T extends (infer U)[] ? DeepPartial<U>[] : T extends object ? { [K in keyof T]?: DeepPartial<T[K]> } : T;
/** One source's config: normalised, but only the keys it sets (no defaults). */
export type KilnConfigInput = DeepPartial<KilnConfig>;

// ---- Schema walking helpers shared by parse, merge and docs. ----

export type SchemaNode = Record<string, any>;

/** The schema of the child `key` of an object schema (a declared property or a map entry). */
export function childSchema(node: SchemaNode | undefined, key: string | number): SchemaNode | undefined {
  if (!node) return undefined;
  if (typeof key === 'number') return typeof node.items === 'object' ? node.items : undefined;
  if (node.properties && Object.hasOwn(node.properties, key)) return node.properties[key];
  if (typeof node.additionalProperties === 'object') return node.additionalProperties;
  return undefined;
}

/** The schema at a path of keys, or undefined when the path leaves the schema. */
export function schemaAt(path: (string | number)[]): SchemaNode | undefined {
  let node: SchemaNode | undefined = CONFIG_SCHEMA;
  for (const k of path) node = childSchema(node, k);
  return node;
}

/** alias -> canonical name, for the declared properties of an object schema. */
export function aliasesOf(node: SchemaNode | undefined): Map<string, string> {
  const m = new Map<string, string>();
  for (const [k, v] of Object.entries<SchemaNode>(node?.properties ?? {})) for (const a of [...(v['x-aliases'] ?? []), ...(v['x-warn-aliases'] ?? [])]) m.set(a, k);
  return m;
}

/** The aliases of an object schema that are accepted with a warning (x-warn-aliases). */
export function warnAliasesOf(node: SchemaNode | undefined): Set<string> {
  const m = new Set<string>();
  for (const v of Object.values<SchemaNode>(node?.properties ?? {})) for (const a of v['x-warn-aliases'] ?? []) m.add(a);
  return m;
}

/** The JSON Schema types a node accepts. */
export function typesOf(node: SchemaNode | undefined): string[] {
  if (!node) return [];
  if (node.type) return ([] as string[]).concat(node.type);
  if (node.enum) return [...new Set(node.enum.map((v: unknown) => typeof v))] as string[];
  return [];
}
