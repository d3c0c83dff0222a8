// UTC time stamps in Date#toISOString's form, without a Date. V8 looks up the local time zone
// on a Date's first conversion to text: it reads /etc/localtime and loads ICU's zone data from
// Node's binary, about 1 ms and 1.7 MiB natively (0.2 s under TCG), which init has no use for.

/** Date#toISOString of `ms` (milliseconds since the epoch), e.g. 2026-12-01T16:33:12.000Z. */
export function isoUtc(ms: number): string {
  // Outside years 1970 to 9999 (never a clock init keeps), Date's own text, and its RangeError.
  if (!(ms >= 0 && ms < 253402300800000)) return new Date(ms).toISOString();
  const t = Math.floor(ms);
  const days = Math.floor(t / 86400000);
  let rest = t - days * 86400000;
  // Civil date from days since 1970-01-01 (proleptic Gregorian), in 400-year eras from March 1.
  const z = days + 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  const year = yoe + era * 400 + (month <= 2 ? 1 : 0);
  const msPart = rest % 1000; rest = (rest - msPart) / 1000;
  const s = rest % 60; rest = (rest - s) / 60;
  const m = rest % 60;
  const h = (rest - m) / 60;
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(year, 4)}-${p(month)}-${p(day)}T${p(h)}:${p(m)}:${p(s)}.${p(msPart, 3)}Z`;
}

/** isoUtc of whole seconds, without the milliseconds: 2026-12-01T16:33:12Z. */
export const isoUtcS = (s: number): string => isoUtc(s * 1000).replace(/\.000Z$/, 'Z');
