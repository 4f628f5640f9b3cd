/* commands.h - the subcommands of the infer tool, one file each
 * (tools/cmd_<name>.c).  A new command is a new file, a line here and a
 * line in the table of tools/infer.c. */
#ifndef INFER_TOOL_COMMANDS_H
#define INFER_TOOL_COMMANDS_H

#include "cli.h"

int cmd_info(const cli_command *self, int argc, char **argv);
int cmd_logits(const cli_command *self, int argc, char **argv);
int cmd_tokenize(const cli_command *self, int argc, char **argv);
int cmd_detokenize(const cli_command *self, int argc, char **argv);
int cmd_generate(const cli_command *self, int argc, char **argv);
int cmd_chat(const cli_command *self, int argc, char **argv);
int cmd_classify(const cli_command *self, int argc, char **argv);
int cmd_batch(const cli_command *self, int argc, char **argv);
int cmd_inspect(const cli_command *self, int argc, char **argv);
int cmd_chat_template(const cli_command *self, int argc, char **argv);
int cmd_list(const cli_command *self, int argc, char **argv);
int cmd_devices(const cli_command *self, int argc, char **argv);
int cmd_quantize(const cli_command *self, int argc, char **argv);
int cmd_bench(const cli_command *self, int argc, char **argv);
int cmd_lora(const cli_command *self, int argc, char **argv);
int cmd_fuse(const cli_command *self, int argc, char **argv);

#endif
