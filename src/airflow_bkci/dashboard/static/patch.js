// RFC 6902 JSON Patch (add, remove, replace) over RFC 6901 pointers, without touching the input.
//
// Each change set is applied copy-on-write along the paths it touches: the result shares every
// untouched object with the old document, so a view can tell what changed by identity, and a
// change set that fails half-way leaves the old document as it was (all operations or none).

export class PatchError extends Error {}

/** The reference tokens of a JSON Pointer: "/a~1b/c~0d" -> ["a/b", "c~d"]. */
export function parsePointer(pointer) {
  if (pointer === "") return [];
  if (typeof pointer !== "string" || pointer[0] !== "/") {
    throw new PatchError(`bad JSON Pointer ${JSON.stringify(pointer)}: it must start with "/"`);
  }
  // ~1 first, then ~0, as RFC 6901 says: "~01" is "~1", not "/".
  return pointer.slice(1).split("/").map((t) => t.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function shallowCopy(value) {
  return Array.isArray(value) ? value.slice() : { ...value };
}

function arrayIndex(arr, token, forAdd) {
  if (forAdd && token === "-") return arr.length;
  if (!/^(0|[1-9][0-9]*)$/.test(token)) throw new PatchError(`bad array index ${token}`);
  const index = Number(token);
  if (index > arr.length || (!forAdd && index === arr.length)) {
    throw new PatchError(`array index ${token} out of range`);
  }
  return index;
}

function applyOne(doc, op) {
  const tokens = parsePointer(op.path);
  if (op.op !== "add" && op.op !== "remove" && op.op !== "replace") {
    throw new PatchError(`unsupported patch operation ${JSON.stringify(op.op)}`);
  }
  if (tokens.length === 0) {
    if (op.op === "remove") throw new PatchError("cannot remove the whole document");
    return op.value;
  }
  const root = shallowCopy(doc ?? {});
  let parent = root;
  for (let i = 0; i < tokens.length - 1; i++) {
    const key = Array.isArray(parent) ? arrayIndex(parent, tokens[i], false) : tokens[i];
    const child = parent[key];
    if (child === null || typeof child !== "object" || !Object.hasOwn(parent, key)) {
      throw new PatchError(`path ${op.path} does not exist`);
    }
    parent[key] = shallowCopy(child);
    parent = parent[key];
  }
  const last = tokens[tokens.length - 1];
  if (Array.isArray(parent)) {
    const index = arrayIndex(parent, last, op.op === "add");
    if (op.op === "add") parent.splice(index, 0, op.value);
    else if (op.op === "remove") parent.splice(index, 1);
    else parent[index] = op.value;
  } else {
    if (op.op !== "add" && !Object.hasOwn(parent, last)) {
      throw new PatchError(`path ${op.path} does not exist`);
    }
    if (op.op === "remove") delete parent[last];
    else parent[last] = op.value;
  }
  return root;
}

/** The document after every operation of `ops`; throws PatchError (and changes nothing) if one fails. */
export function applyPatch(doc, ops) {
  if (!Array.isArray(ops)) throw new PatchError("a patch is a list of operations");
  let result = doc;
  for (const op of ops) result = applyOne(result, op);
  return result;
}
