/*
 * The SQL of the PostgreSQL adapter. Identifiers are quoted; every value is a parameter. Jsonb
 * columns are read as text (`::text`) and parsed here, so the caller's type parsers on the pool
 * do not matter, and a stored value is compared exactly as PostgreSQL holds it.
 */

/** `"name"` with embedded quotes doubled: any table or schema name is safe. */
export const quote = (identifier: string): string => `"${identifier.replaceAll('"', '""')}"`

/**
 * The old values of the named properties of `col` (the jsonb of the locked row), in the order of
 * `names`, as a JSON array of JSON texts (`null` where absent).
 */
const olds = (col: string, names: string): string =>
  `to_jsonb(ARRAY(SELECT (${col} -> u.k)::text FROM unnest(${names}) WITH ORDINALITY u(k, n)
    ORDER BY u.n))::text`

/** The statements of one table. */
export interface Statements {
  readonly create: readonly string[]
  readonly commit: string
  readonly blind: string
  readonly blindPlain: string
  readonly update: string
  readonly updateProps: string
  readonly updateProp: string
  readonly load: string
  readonly getProp: string
  readonly getExt: string
  readonly flush: string
  readonly list: string
  readonly prune: string
  /** Applies a batch of units of work (`$1`: JSON array of units); see `unitsFunction`. */
  readonly units: string
  readonly claim: string
  readonly remove: string
  readonly size: string
}

/**
 * Builds the statements for `schema.table` and its idempotency side table `{table}_applied`.
 *
 * The table is KRules': `subject_name text primary key, properties jsonb, ext_properties jsonb,
 * updated_at timestamp`.
 */
export function statements(schema: string, table: string, id: string): Statements {
  const t = `${quote(schema)}.${quote(table)}`
  const a = `${quote(schema)}.${quote(`${table}_applied`)}`
  const ob = `${quote(schema)}.${quote(`${table}_outbox`)}`
  const body = unitsFunction(t, a, ob)
  // Named after its table and its source: a changed function is a new one, created beside.
  const fn = `${quote(schema)}.${quote(`substate_units_${id}_${hash(body)}`)}`
  return {
    create: [
      `CREATE TABLE IF NOT EXISTS ${t} (
        subject_name text PRIMARY KEY,
        properties jsonb NOT NULL DEFAULT '{}',
        ext_properties jsonb NOT NULL DEFAULT '{}',
        updated_at timestamp DEFAULT now())`,
      `CREATE TABLE IF NOT EXISTS ${a} (
        subject_name text NOT NULL,
        key text NOT NULL,
        at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (subject_name, key))`,
      `CREATE INDEX IF NOT EXISTS ${quote(`${table}_applied_at`)} ON ${a} (at)`,
      `CREATE TABLE IF NOT EXISTS ${ob} (
        id text PRIMARY KEY,
        body text NOT NULL,
        owner text NOT NULL DEFAULT '',
        lease_until timestamptz NOT NULL,
        seq bigserial NOT NULL)`,
      `CREATE INDEX IF NOT EXISTS ${quote(`${table}_outbox_seq`)} ON ${ob} (seq)`,
      // Under a lock, so processes starting together do not replace it under each other.
      `DO $do$ BEGIN
        PERFORM pg_advisory_xact_lock(hashtext('substate_units_function'));
        IF to_regprocedure(${literal(`${fn}(jsonb)`)}) IS NULL THEN
          CREATE FUNCTION ${fn}(units jsonb) RETURNS jsonb LANGUAGE plpgsql AS $fn$${body}$fn$;
        END IF;
      END $do$`,
    ],
    units: `SELECT ${fn}($1::jsonb)::text AS r`,
    claim: `WITH c AS (
      SELECT id FROM ${ob} WHERE lease_until <= now() ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED
    )
    UPDATE ${ob} o SET owner = $1, lease_until = now() + $3 * interval '1 millisecond'
    FROM c WHERE o.id = c.id RETURNING o.id, o.body, o.seq`,
    remove: `DELETE FROM ${ob} WHERE id = ANY ($1::text[])`,
    size: `SELECT count(*)::int AS n FROM ${ob}`,
    commit: commit(t, a),
    blind: blind(t, a),
    blindPlain: blindPlain(t),
    update: update(t),
    updateProps: updateProps(t),
    updateProp: updateProp(t),
    load: `SELECT properties::text AS p, ext_properties::text AS e FROM ${t} WHERE subject_name = $1`,
    getProp: `SELECT (properties -> $2)::text AS v, jsonb_typeof(properties) AS t
      FROM ${t} WHERE subject_name = $1`,
    getExt: `SELECT (ext_properties -> $2)::text AS v, jsonb_typeof(ext_properties) AS t
      FROM ${t} WHERE subject_name = $1`,
    // A row whose columns are not objects is not deleted: it is returned, and reading it fails.
    flush: `WITH d AS (
      DELETE FROM ${t} WHERE subject_name = $1
        AND jsonb_typeof(COALESCE(properties, '{}')) = 'object'
        AND jsonb_typeof(COALESCE(ext_properties, '{}')) = 'object'
      RETURNING properties::text AS p, ext_properties::text AS e
    )
    SELECT p, e FROM d
    UNION ALL SELECT properties::text, ext_properties::text FROM ${t}
    WHERE subject_name = $1 AND NOT EXISTS (SELECT 1 FROM d)`,
    // Keyset pagination: stable under concurrent writes, and uses the primary key's order.
    list: `SELECT subject_name AS s FROM ${t}
      WHERE ($1::text IS NULL OR subject_name > $1) AND starts_with(subject_name, $2)
      ORDER BY subject_name LIMIT 500`,
    prune: `DELETE FROM ${a} WHERE at < now() - $1 * interval '1 second'`,
  }
}

/** A SQL string literal. */
const literal = (s: string): string => `'${s.replaceAll("'", "''")}'`

/** A short stable hash of a text (FNV-1a), for naming. */
function hash(text: string): string {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193)
  return (h >>> 0).toString(36)
}

/**
 * The body of the PL/pgSQL function applying a batch of units of work in one call (one round
 * trip, one transaction), in order, each all or nothing.
 *
 * First every subject of the batch is locked, in name order (so concurrent batches cannot
 * deadlock): an existing row with `FOR UPDATE`, a missing one by inserting an empty placeholder
 * row (`ON CONFLICT DO NOTHING`, so a concurrent insert waits for this transaction). Then per
 * unit: its key is inserted into `{table}_applied` (subject `''`; already there: `duplicate`);
 * its checks are compared as jsonb values; when all hold, its writes are applied and its outbox
 * messages inserted, leased until `now() + lease`; otherwise its key is removed again and the
 * current rows of the subjects that failed are returned. Placeholders left empty, and rows a unit
 * emptied, are deleted at the end.
 *
 * A unit: `key` (or null), `owner`, `lease` (ms), `o` (outbox: `id`, `body`), `e` (entries): `s`
 * subject; per column (`p` properties, `e` ext_properties): `c?` expected values, `a?` names
 * expected absent, `n?` exact names (or null), `s?` values to set, `d?` names to delete.
 * Returns per unit `{"st":1}` applied, `{"st":2}` duplicate, `{"st":0,"stale":{subject:[p,e]}}`
 * (the columns as text) or `{"st":4,"s":subject,"col":column,"type":type}` when a row's column is
 * neither an object nor NULL (written by another tool).
 */
function unitsFunction(t: string, a: string, ob: string): string {
  return `
DECLARE
  subs text[];
  created text[] := '{}';
  written text[] := '{}';
  s text;
  u jsonb;
  e jsonb;
  res jsonb := '[]';
  stale jsonb;
  bad jsonb;
  p jsonb;
  x jsonb;
  ok boolean;
BEGIN
  SELECT COALESCE(array_agg(DISTINCT y.s ORDER BY y.s), '{}') INTO subs
  FROM jsonb_array_elements(units) uu, jsonb_array_elements(uu.value -> 'e') ee,
    LATERAL (SELECT ee.value ->> 's' AS s) y;
  FOREACH s IN ARRAY subs LOOP
    LOOP
      INSERT INTO ${t} (subject_name, properties, ext_properties, updated_at)
      VALUES (s, '{}', '{}', now()) ON CONFLICT (subject_name) DO NOTHING;
      IF FOUND THEN
        created := created || s;
        EXIT;
      END IF;
      PERFORM 1 FROM ${t} WHERE subject_name = s FOR UPDATE;
      EXIT WHEN FOUND;
    END LOOP;
  END LOOP;
  FOR u IN SELECT value FROM jsonb_array_elements(units) LOOP
    IF u ->> 'key' IS NOT NULL THEN
      INSERT INTO ${a} (subject_name, key, at) VALUES ('', u ->> 'key', now())
      ON CONFLICT DO NOTHING;
      IF NOT FOUND THEN
        res := res || '[{"st":2}]';
        CONTINUE;
      END IF;
    END IF;
    stale := '{}';
    bad := NULL;
    FOR e IN SELECT value FROM jsonb_array_elements(u -> 'e') LOOP
      SELECT r.properties, r.ext_properties INTO p, x FROM ${t} r WHERE r.subject_name = e ->> 's';
      p := COALESCE(p, '{}');
      x := COALESCE(x, '{}');
      IF jsonb_typeof(p) <> 'object' THEN
        bad := jsonb_build_object('st', 4, 's', e ->> 's', 'col', 'properties', 'type', jsonb_typeof(p));
        EXIT;
      END IF;
      IF jsonb_typeof(x) <> 'object' THEN
        bad := jsonb_build_object('st', 4, 's', e ->> 's', 'col', 'ext_properties', 'type', jsonb_typeof(x));
        EXIT;
      END IF;
      ok := NOT EXISTS (SELECT 1 FROM jsonb_each(e -> 'cp') c WHERE p -> c.key IS DISTINCT FROM c.value)
        AND NOT EXISTS (SELECT 1 FROM jsonb_each(e -> 'ce') c WHERE x -> c.key IS DISTINCT FROM c.value)
        AND NOT (p ?| ARRAY(SELECT jsonb_array_elements_text(e -> 'ap')))
        AND NOT (x ?| ARRAY(SELECT jsonb_array_elements_text(e -> 'ae')))
        AND (jsonb_typeof(e -> 'np') IS DISTINCT FROM 'array'
          OR (p ?& ARRAY(SELECT jsonb_array_elements_text(e -> 'np'))
            AND (SELECT count(*) FROM jsonb_object_keys(p)) = jsonb_array_length(e -> 'np')))
        AND (jsonb_typeof(e -> 'ne') IS DISTINCT FROM 'array'
          OR (x ?& ARRAY(SELECT jsonb_array_elements_text(e -> 'ne'))
            AND (SELECT count(*) FROM jsonb_object_keys(x)) = jsonb_array_length(e -> 'ne')));
      IF NOT ok THEN
        stale := stale || jsonb_build_object(e ->> 's', jsonb_build_array(p::text, x::text));
      END IF;
    END LOOP;
    IF bad IS NOT NULL OR stale <> '{}' THEN
      IF u ->> 'key' IS NOT NULL THEN
        DELETE FROM ${a} WHERE subject_name = '' AND key = u ->> 'key';
      END IF;
      res := res || jsonb_build_array(COALESCE(bad, jsonb_build_object('st', 0, 'stale', stale)));
      CONTINUE;
    END IF;
    FOR e IN SELECT value FROM jsonb_array_elements(u -> 'e') LOOP
      IF e -> 'sp' <> '{}' OR e -> 'se' <> '{}' OR e -> 'dp' <> '[]' OR e -> 'de' <> '[]' THEN
        UPDATE ${t} SET
          properties = (COALESCE(properties, '{}') - ARRAY(SELECT jsonb_array_elements_text(e -> 'dp')))
            || (e -> 'sp'),
          ext_properties = (COALESCE(ext_properties, '{}') - ARRAY(SELECT jsonb_array_elements_text(e -> 'de')))
            || (e -> 'se'),
          updated_at = now()
        WHERE subject_name = e ->> 's';
        written := written || (e ->> 's');
      END IF;
    END LOOP;
    INSERT INTO ${ob} (id, body, owner, lease_until)
    SELECT m ->> 'id', m ->> 'body', COALESCE(u ->> 'owner', ''),
      now() + COALESCE((u ->> 'lease')::bigint, 30000) * interval '1 millisecond'
    FROM jsonb_array_elements(COALESCE(u -> 'o', '[]')) m
    ON CONFLICT (id) DO NOTHING;
    res := res || '[{"st":1}]';
  END LOOP;
  DELETE FROM ${t} WHERE subject_name = ANY (created || written)
    AND properties = '{}' AND ext_properties = '{}';
  RETURN res;
END
`
}

/**
 * The fast path of one commit to a subject whose row exists, without an idempotency key: lock the
 * row, update it if the checks hold, and return the old values either way (the current ones, when
 * a check failed). It returns no row when the subject has none (the caller then runs the batch
 * statement, which creates it).
 *
 * `$1` subject; per column (`p` properties `$2`..`$6`, `e` ext_properties `$7`..`$11`): names to
 * delete, values to set, values expected, names expected absent, names whose old values to return.
 * Returns `done` and the old values `op`/`oe` (see `olds`).
 */
function update(t: string): string {
  return `WITH o AS (
  SELECT subject_name AS s, COALESCE(properties, '{}') AS p, COALESCE(ext_properties, '{}') AS e,
    jsonb_typeof(properties) AS tp, jsonb_typeof(ext_properties) AS te
  FROM ${t} WHERE subject_name = $1 FOR UPDATE
), u AS (
  UPDATE ${t} r SET
    properties = (o.p - $2::text[]) || $3::jsonb,
    ext_properties = (o.e - $7::text[]) || $8::jsonb,
    updated_at = now()
  FROM o
  WHERE r.subject_name = o.s
    AND ($4::jsonb = '{}' OR NOT EXISTS (SELECT 1 FROM jsonb_each($4::jsonb) c
      WHERE o.p -> c.key IS DISTINCT FROM c.value))
    AND ($9::jsonb = '{}' OR NOT EXISTS (SELECT 1 FROM jsonb_each($9::jsonb) c
      WHERE o.e -> c.key IS DISTINCT FROM c.value))
    AND NOT (o.p ?| $5::text[])
    AND NOT (o.e ?| $10::text[])
    AND ${objects('o')}
  RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM u) AS done, o.tp, o.te,
  ${olds('o.p', '$6::text[]')} AS op, ${olds('o.e', '$11::text[]')} AS oe
FROM o`
}

/**
 * {@link update} for the most common write-through commit: properties only, sets and checked
 * values (updaters), no deletes, no ext properties, no check that a property is absent. Fewer
 * parameters and checks make it about as cheap as a hand-written read-modify-write.
 *
 * `$1` subject, `$2` values to set, `$3` values expected, `$4` names whose old values to return.
 * Returns `done` and `op` (see `olds`); no row when the subject has none.
 */
function updateProps(t: string): string {
  return `WITH o AS (
  SELECT subject_name AS s, COALESCE(properties, '{}') AS p,
    jsonb_typeof(properties) AS tp, jsonb_typeof(ext_properties) AS te
  FROM ${t} WHERE subject_name = $1 FOR UPDATE
), u AS (
  UPDATE ${t} r SET properties = o.p || $2::jsonb, updated_at = now()
  FROM o
  WHERE r.subject_name = o.s
    AND ($3::jsonb = '{}' OR NOT EXISTS (SELECT 1 FROM jsonb_each($3::jsonb) c
      WHERE o.p -> c.key IS DISTINCT FROM c.value))
    AND ${objects('o')}
  RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM u) AS done, o.tp, o.te, ${olds('o.p', '$4::text[]')} AS op
FROM o`
}

/**
 * {@link updateProps} for one property (one `set` or one updater): no JSON objects to take apart.
 *
 * `$1` subject, `$2` property name, `$3` value to set, `$4` value expected (`NULL`: not checked).
 * Returns `done` and `v`, the old value (JSON text, `NULL` when absent); no row when the subject
 * has none.
 */
function updateProp(t: string): string {
  return `WITH o AS (
  SELECT subject_name AS s, COALESCE(properties, '{}') AS p,
    jsonb_typeof(properties) AS tp, jsonb_typeof(ext_properties) AS te
  FROM ${t} WHERE subject_name = $1 FOR UPDATE
), u AS (
  UPDATE ${t} r SET properties = o.p || jsonb_build_object($2::text, $3::jsonb), updated_at = now()
  FROM o
  WHERE r.subject_name = o.s AND ($4::jsonb IS NULL OR o.p -> $2::text = $4::jsonb)
    AND ${objects('o')}
  RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM u) AS done, o.tp, o.te, (o.p -> $2::text)::text AS v
FROM o`
}

/**
 * One statement applying a batch of commits (one per subject), each all or nothing.
 *
 * `$1` is a JSON array of entries: `i` (index), `s` (subject), `probe`, `key` (idempotency key or
 * null); `$2` is the array of their subject names, so that rows are found by the primary key
 * whatever the planner guesses of `$1` (a guess of 100 rows made it scan whole tables); per column (`p` properties, `e` ext_properties): `sp`/`se` values to set, `dp`/`de` names
 * to delete, `ep`/`ee` values expected (compare-and-set), `ap`/`ae` names expected absent, `kp`/`ke`
 * names whose old values to return.
 *
 * Rows are locked in subject order (`FOR UPDATE`), so that concurrent batches cannot deadlock on
 * existing rows; a subject without a row is inserted with `ON CONFLICT DO NOTHING`, so that two
 * writers creating it cannot both succeed: the loser is told (status 3) and retries on the row.
 *
 * Returns per entry: `status` (1 applied, 0 not applied: a check failed or a probe, 2 duplicate
 * idempotency key, 3 lost the race to create the row) and `op`/`oe`, the old values of the named
 * properties (see `olds`).
 */
function commit(t: string, a: string): string {
  return `WITH x AS (
  SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(
    i int, s text, probe boolean, key text,
    sp jsonb, dp text[], se jsonb, de text[],
    ep jsonb, ap text[], ee jsonb, ae text[],
    kp text[], ke text[])
), old AS (
  SELECT r.subject_name AS s,
    COALESCE(r.properties, '{}') AS p, COALESCE(r.ext_properties, '{}') AS e,
    jsonb_typeof(r.properties) AS tp, jsonb_typeof(r.ext_properties) AS te
  FROM ${t} r WHERE r.subject_name = ANY ($2::text[])
  ORDER BY r.subject_name
  FOR UPDATE
), dup AS (
  SELECT x.i FROM ${a} k JOIN x ON k.subject_name = x.s AND k.key = x.key
  WHERE k.subject_name = ANY ($2::text[])
), go AS (
  SELECT x.i, x.s, o.s IS NOT NULL AS existed,
    (COALESCE(o.p, '{}') - x.dp) || x.sp AS np,
    (COALESCE(o.e, '{}') - x.de) || x.se AS ne
  FROM x LEFT JOIN old o ON o.s = x.s
  WHERE NOT x.probe
    AND NOT EXISTS (SELECT 1 FROM dup WHERE dup.i = x.i)
    AND (x.ep = '{}' OR NOT EXISTS (SELECT 1 FROM jsonb_each(x.ep) c
      WHERE COALESCE(o.p, '{}') -> c.key IS DISTINCT FROM c.value))
    AND (x.ee = '{}' OR NOT EXISTS (SELECT 1 FROM jsonb_each(x.ee) c
      WHERE COALESCE(o.e, '{}') -> c.key IS DISTINCT FROM c.value))
    AND NOT (COALESCE(o.p, '{}') ?| x.ap)
    AND NOT (COALESCE(o.e, '{}') ?| x.ae)
    AND (o.s IS NULL OR ${objects('o')})
), upd AS (
  UPDATE ${t} r SET properties = go.np, ext_properties = go.ne, updated_at = now()
  FROM go
  WHERE go.existed AND r.subject_name = go.s AND (go.np <> '{}' OR go.ne <> '{}')
  RETURNING go.i
), del AS (
  DELETE FROM ${t} r USING go
  WHERE go.existed AND r.subject_name = go.s AND go.np = '{}' AND go.ne = '{}'
  RETURNING go.i
), ins AS (
  INSERT INTO ${t} AS r (subject_name, properties, ext_properties, updated_at)
  SELECT go.s, go.np, go.ne, now() FROM go
  WHERE NOT go.existed AND (go.np <> '{}' OR go.ne <> '{}')
  ORDER BY go.s
  ON CONFLICT (subject_name) DO NOTHING
  RETURNING r.subject_name
), done AS (
  SELECT upd.i FROM upd
  UNION ALL SELECT del.i FROM del
  UNION ALL SELECT go.i FROM go JOIN ins ON ins.subject_name = go.s
  UNION ALL SELECT go.i FROM go WHERE NOT go.existed AND go.np = '{}' AND go.ne = '{}'
), keys AS (
  INSERT INTO ${a} (subject_name, key, at)
  SELECT x.s, x.key, now() FROM x JOIN done ON done.i = x.i WHERE x.key IS NOT NULL
)
SELECT x.i,
  CASE WHEN EXISTS (SELECT 1 FROM dup WHERE dup.i = x.i) THEN 2
    WHEN EXISTS (SELECT 1 FROM done WHERE done.i = x.i) THEN 1
    WHEN EXISTS (SELECT 1 FROM go WHERE go.i = x.i) THEN 3
    ELSE 0 END AS status, o.tp, o.te,
  ${olds('o.p', 'x.kp')} AS op, ${olds('o.e', 'x.ke')} AS oe
FROM x LEFT JOIN old o ON o.s = x.s`
}

/**
 * One statement applying a batch of blind commits (one per subject): sets and deletes whose old
 * values are not needed, each setting at least one property (so that no row can become empty,
 * which would have to be deleted). One upsert, in subject order, without reading the rows first;
 * its row locks serialize it with concurrent writers, which read the merged row after it.
 *
 * `$1` is a JSON array of entries: `i` (index), `s` (subject), `key` (idempotency key or null),
 * `sp`/`se` values to set (`p` properties, `e` ext_properties); `$2` is the array of their subject
 * names (for the idempotency keys' primary key); `$3`/`$4` map the subjects that delete
 * properties/ext properties to the names they delete (an object, looked up in O(log n) per row:
 * a correlated subquery on the entries would make the statement quadratic in the batch size).
 *
 * Returns per entry: `status` (1 applied, 2 duplicate idempotency key).
 */
function blind(t: string, a: string): string {
  return `WITH x AS (
  SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(
    i int, s text, key text, sp jsonb, se jsonb)
), dup AS (
  SELECT x.i FROM ${a} k JOIN x ON k.subject_name = x.s AND k.key = x.key
  WHERE k.subject_name = ANY ($2::text[])
), go AS (
  SELECT x.* FROM x WHERE NOT EXISTS (SELECT 1 FROM dup WHERE dup.i = x.i)
), ups AS (
  ${upsert(t, 'go')}
), keys AS (
  INSERT INTO ${a} (subject_name, key, at)
  SELECT go.s, go.key, now() FROM go JOIN ups ON ups.s = go.s WHERE go.key IS NOT NULL
)
SELECT x.i, CASE WHEN dup.i IS NOT NULL THEN 2
  WHEN EXISTS (SELECT 1 FROM ups WHERE ups.s = x.s) THEN 1 ELSE 5 END AS status
FROM x LEFT JOIN dup ON dup.i = x.i`
}

/**
 * {@link blind} for a batch without idempotency keys: the upsert alone (`$2` unused: an empty
 * array, kept so that both statements take the same parameters). Returns no rows: every entry is
 * applied.
 */
function blindPlain(t: string): string {
  return `WITH go AS (
  SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(s text, sp jsonb, se jsonb)
  WHERE cardinality($2::text[]) >= 0
)
${upsert(t, 'go')}`
}

/** Inserts the entries of `go` (`s`, `sp`, `se`), merging into existing rows (see `blind`). */
function upsert(t: string, go: string): string {
  return `INSERT INTO ${t} AS r (subject_name, properties, ext_properties, updated_at)
  SELECT ${go}.s, ${go}.sp, ${go}.se, now() FROM ${go}
  ORDER BY ${go}.s
  ON CONFLICT (subject_name) DO UPDATE SET
    properties = CASE WHEN $3::jsonb ? r.subject_name
      THEN COALESCE(r.properties, '{}')
        - ARRAY(SELECT jsonb_array_elements_text($3::jsonb -> r.subject_name))
      ELSE COALESCE(r.properties, '{}') END || EXCLUDED.properties,
    ext_properties = CASE WHEN $4::jsonb ? r.subject_name
      THEN COALESCE(r.ext_properties, '{}')
        - ARRAY(SELECT jsonb_array_elements_text($4::jsonb -> r.subject_name))
      ELSE COALESCE(r.ext_properties, '{}') END || EXCLUDED.ext_properties,
    updated_at = EXCLUDED.updated_at
  WHERE jsonb_typeof(COALESCE(r.properties, '{}')) = 'object'
    AND jsonb_typeof(COALESCE(r.ext_properties, '{}')) = 'object'
  RETURNING r.subject_name AS s`
}

/**
 * Whether the row `o` (with `tp`/`te`, the jsonb types of its columns) holds objects (or NULL) in
 * both columns: another tool may have written a string or an array there, which a write would
 * corrupt further.
 */
const objects = (o: string): string =>
  `(${o}.tp IS NULL OR ${o}.tp = 'object') AND (${o}.te IS NULL OR ${o}.te = 'object')`
