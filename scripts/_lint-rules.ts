/**
 * The project's own lint rules, a `deno lint` plugin (deno.json): not a command.
 *
 * - `project/max-function-lines`: no function of the tool (mod.ts, src/, strategies/,
 *   scripts/) is longer than 80 lines; one that is does several jobs. Tests are exempt:
 *   a `describe` block is a function too.
 *
 * @module
 */

/** The longest a function may be, in lines, braces included. */
const MAX_FUNCTION_LINES = 80;

type FunctionNode = Deno.lint.FunctionDeclaration | Deno.lint.FunctionExpression | Deno.lint.ArrowFunctionExpression;

const plugin: Deno.lint.Plugin = {
  name: "project",
  rules: {
    "max-function-lines": {
      create(context) {
        if (/[\\/]tests[\\/]/.test(context.filename)) return {};
        const check = (node: FunctionNode) => {
          const [start, end] = node.range;
          const lines = context.sourceCode.text.slice(start, end).split("\n").length;
          if (lines > MAX_FUNCTION_LINES) {
            context.report({
              node,
              message: `This function is ${lines} lines long; split it (at most ${MAX_FUNCTION_LINES})`,
            });
          }
        };
        return { FunctionDeclaration: check, FunctionExpression: check, ArrowFunctionExpression: check };
      },
    },
  },
};

export default plugin;
