/* commands.h - the subcommands of the infer tool, one file each
 * (tools/cmd_<name>.c).  A new command is a new file, a line here and a
 * line in the table of tools/infer.c. */
#ifndef INFER_TOOL_COMMANDS_H
#define INFER_TOOL_COMMANDS_H

#include "cli.h"

int cmd_info(const cli_command *self, int argc, char **argv);
int cmd_logits(const cli_command *self, int argc, char **argv);

#endif
