/**
 * Typed SQL: Slonik's `sql.type` takes a Standard Schema, which TypeBox 0.34 is not, so a
 * small adapter makes one, and an interceptor checks every row such a query returns. A
 * leaf: it imports no file of the project (strategies that keep tables use it too).
 *
 * @module
 */
import type { StandardSchemaV1 } from "@standard-schema/spec";
import type { Static, TSchema } from "@sinclair/typebox";
import { TypeCompiler } from "@sinclair/typebox/compiler";
import { type Interceptor, SchemaValidationError } from "slonik";

/**
 * Adapt a TypeBox schema to Standard Schema, which Slonik's `sql.type` takes.
 * Issues carry the path and rule, never the offending value.
 *
 * @param schema a TypeBox schema
 * @returns a Standard Schema validating the same shape
 */
export function toStandardSchema<T extends TSchema>(schema: T): StandardSchemaV1<Static<T>, Static<T>> {
  const check = TypeCompiler.Compile(schema);
  return {
    "~standard": {
      version: 1,
      vendor: "typebox",
      validate(value) {
        if (check.Check(value)) return { value: value as Static<T> };
        return {
          issues: [...check.Errors(value)].map((error) => ({
            message: error.message,
            path: error.path.split("/").filter(Boolean),
          })),
        };
      },
    },
  };
}

/** Checks returned rows against the `sql.type` schema, since Slonik leaves that to interceptors. */
export const resultParserInterceptor: Interceptor = {
  name: "standard-schema-result-parser",
  transformRowAsync: async (context, query, row) => {
    if (!context.resultParser) return row;
    const result = await context.resultParser["~standard"].validate(row);
    if (result.issues) throw new SchemaValidationError(query, row, result.issues);
    return result.value as typeof row;
  },
};
