/* files.h - small file helpers shared by the writers of model folders. */
#ifndef INFER_IO_FILES_H
#define INFER_IO_FILES_H

/* The files beside the weights that a written model folder keeps
 * (tokenizer, generation config, chat template), NULL-terminated. */
extern const char *const io_side_files[];

/* Copies src to dst.  A missing src is not an error: *copied (may be
 * NULL) tells whether there was one.  A failed copy leaves no dst. */
int io_copy_file(const char *src, const char *dst, int *copied);

#endif
