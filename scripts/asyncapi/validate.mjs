// Validate an AsyncAPI document with the official parser: prints every diagnostic, exits 1 on an error.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const text = readFileSync(process.argv[2], "utf8");
const diagnostics = await new Parser().validate(text);
let errors = 0;
for (const d of diagnostics) {
  const level = ["error", "warning", "info", "hint"][d.severity] ?? String(d.severity);
  if (d.severity === 0) errors += 1;
  console.log(`${level}: ${d.code}: ${d.message} at ${JSON.stringify(d.path)}`);
}
console.log(`${errors} error(s), ${diagnostics.length - errors} other diagnostic(s)`);
process.exit(errors ? 1 : 0);
