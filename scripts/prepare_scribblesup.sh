#!/bin/sh
# ScribbleSup in one command (docs/data.md): the training set in dataset/ScribbleSup/VOC2012 in
# the SPEC §1 layout, checked by datasets.check at the end. Flags go to the tool:
#   sh scripts/prepare_scribblesup.sh --pseudo BMP --checkpoint   # the authors' packages (Google
#       Drive): their ScribbleSup, distance maps, BMP pseudo-labels and the released checkpoint,
#       in log/train_deeplabv2_r50/; then `sh scripts/emlc_r50_deeplabv2.sh` scores it
#   sh scripts/prepare_scribblesup.sh --source official            # VOC2012 + SBD + the XML scribbles
#   sh scripts/prepare_scribblesup.sh --from ~/Downloads           # archives fetched by hand
# Interrupted? Run it again: downloads resume, finished steps are skipped.
. "$(dirname -- "$0")/env.sh"
exec python -m datasets.prepare_scribblesup --root "${ROOT:-dataset/ScribbleSup}" "$@"
