/* infer.c - the `infer` command-line tool: finds the subcommand in the
 * table below and runs it.  Each command lives in tools/cmd_<name>.c and
 * uses only the public header include/infer.h.
 *
 * Exit status: 0 success, 1 failure (a library or I/O error), 2 bad usage. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"

static int cmd_help(const cli_command *self, int argc, char **argv);

/* The subcommands, in the order `infer --help` lists them. */
static const cli_command commands[] = {
    {"info", cmd_info, "print a model's configuration and size"},
    {"logits", cmd_logits, "write the logits of a sequence of token ids to a .npy file"},
    {"generate", cmd_generate, "generate text from a prompt, streaming it to stdout"},
    {"chat", cmd_chat, "chat with a model interactively (the cache is kept between turns)"},
    {"classify", cmd_classify, "the next token of many prompts in one batched prefill"},
    {"batch", cmd_batch, "generate from many prompts at once"},
    {"inspect", cmd_inspect, "write the post-RoPE keys (and queries) of a prompt to .npy files"},
    {"tokenize", cmd_tokenize, "print the token ids of a text as a JSON array"},
    {"detokenize", cmd_detokenize, "print the text of a list of token ids"},
    {"chat-template", cmd_chat_template, "print a conversation rendered with the model's chat template"},
    {"list", cmd_list, "list the model folders in a folder or a Hugging Face cache"},
    {"devices", cmd_devices, "print each backend's device and memory"},
    {"quantize", cmd_quantize, "write an MLX-quantized copy of a model folder (or dequantize one)"},
    {"bench", cmd_bench, "prefill and decode speed beside the memory-bandwidth limit"},
    {"lora", cmd_lora, "fine-tune a LoRA adapter on a data folder (as mlx_lm.lora --train)"},
    {"fuse", cmd_fuse, "write a model folder with a LoRA adapter merged into its weights"},
    {"help", cmd_help, "show this help, or a command's help (infer help COMMAND)"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static const cli_command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(commands[i].name, name)) return &commands[i];
    return NULL;
}

static void print_main_help(FILE *f)
{
    fprintf(f, "infer %s - run language models from Hugging Face model folders\n\n",
            infer_version());
    fprintf(f, "usage: infer COMMAND [arguments] [options]\n"
               "       infer --version | --help\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-8s  %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nRun 'infer COMMAND --help' for a command's arguments and options.\n"
               "Exit status: 0 success, 1 failure, 2 bad usage.\n");
}

static int unknown_command(const char *name)
{
    fprintf(stderr, "infer: unknown %s '%s'\nTry 'infer --help'.\n",
            name[0] == '-' ? "option" : "command", name);
    return CLI_EXIT_USAGE;
}

/* `infer help [COMMAND]`. */
static int cmd_help(const cli_command *self, int argc, char **argv)
{
    if (argc == 0 || (argc == 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")))) {
        print_main_help(stdout);
        return CLI_EXIT_OK;
    }
    if (argc > 1) return cli_usage_error(self, "expected one command name, got %d", argc);
    const cli_command *cmd = find_command(argv[0]);
    if (!cmd) return unknown_command(argv[0]);
    if (cmd == self) {
        print_main_help(stdout);
        return CLI_EXIT_OK;
    }
    char help_arg[] = "--help";
    char *help_argv[] = {help_arg, NULL};
    return cmd->run(cmd, 1, help_argv);
}

static int dispatch(int argc, char **argv)
{
    if (argc == 0) {
        print_main_help(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *first = argv[0];
    if (!strcmp(first, "--version") || !strcmp(first, "-V")) {
        if (argc > 1) {
            fprintf(stderr, "infer: %s takes no arguments\nTry 'infer --help'.\n", first);
            return CLI_EXIT_USAGE;
        }
        printf("infer %s\n", infer_version());
        return CLI_EXIT_OK;
    }
    if (!strcmp(first, "--help") || !strcmp(first, "-h")) {
        print_main_help(stdout);
        return CLI_EXIT_OK;
    }
    const cli_command *cmd = find_command(first);
    if (!cmd) return unknown_command(first);
    return cmd->run(cmd, argc - 1, argv + 1);
}

int main(int argc, char **argv)
{
    int rc = dispatch(argc > 0 ? argc - 1 : 0, argc > 0 ? argv + 1 : argv);
    errno = 0;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        cli_fail("cannot write to standard output: %s", errno ? strerror(errno) : "I/O error");
        if (rc == CLI_EXIT_OK) rc = CLI_EXIT_FAIL;
    }
    return rc;
}
