"""Runs INSIDE the cached MediaPipe 0.10.21 environment (export/mediapipe_env.py), never in edgekit's:
`python mediapipe_tasks.py ACTION REQUEST.json` ends with edgekit's child-process result line
(`EDGEKIT-RESULT {...}`, edgekit/runtime/child.py), written here by hand: it imports only MediaPipe
and numpy<2 (no edgekit), so it works with that environment's packages.

Actions:
  write_image_metadata  {model, out, name, description, mean, std, labels}: TFLite Model Metadata for
                        MediaPipe's ImageClassifier (RGB input, normalization, labels file), written
                        with MediaPipe's own writer -> {"metadata": {...}}
  read_metadata         {model} -> {"metadata": JSON of the metadata or null, "associated_files": [...]}
  classify_images       {model, images: NPZ of uint8 HxWx3 arrays img0..imgN-1, threads}: MediaPipe
                        Tasks' ImageClassifier on each image -> {"scores": [[score by class index]]}
  classify_files        {model, files: [paths], num_classes, pixels: NPZ path or null}: the same, on
                        image files that MediaPipe decodes itself (`mp.Image.create_from_file`, its own
                        decoder) -> {"scores": [[...] or null], "errors": [message or null]}; with
                        `pixels`, the decoded RGB arrays are written there as img0..imgN-1 (an empty
                        array where a file could not be decoded), for comparison with other decoders
"""

import json
import sys


def write_image_metadata(request: dict) -> dict:
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer

    with open(request["model"], "rb") as f:
        model = bytearray(f.read())
    writer = metadata_writer.MetadataWriter(model)
    writer.add_general_info(request["name"], request["description"])
    writer.add_image_input(request["mean"], request["std"],
                           color_space_type=metadata_writer.MetadataWriter.color_space_types.RGB)
    writer.add_classification_output(metadata_writer.Labels().add(list(request["labels"])))
    data, metadata_json = writer.populate()
    with open(request["out"], "wb") as f:
        f.write(data)
    return {"metadata": json.loads(metadata_json)}


def read_metadata(request: dict) -> dict:
    from mediapipe.tasks.python.metadata import metadata

    with open(request["model"], "rb") as f:
        data = f.read()
    try:
        displayer = metadata.MetadataDisplayer.with_model_buffer(data)
    except ValueError:  # "The model does not have metadata."
        return {"metadata": None, "associated_files": []}
    return {"metadata": json.loads(displayer.get_metadata_json()),
            "associated_files": sorted(displayer.get_packed_associated_file_list())}


def classify_images(request: dict) -> dict:
    import mediapipe as mp
    import numpy as np
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core import base_options

    options = vision.ImageClassifierOptions(
        base_options=base_options.BaseOptions(model_asset_path=request["model"]), max_results=-1)
    scores = []
    with vision.ImageClassifier.create_from_options(options) as classifier, \
            np.load(request["images"], allow_pickle=False) as images:
        for i in range(len(images.files)):
            image = np.ascontiguousarray(images[f"img{i}"], dtype=np.uint8)
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
            row = [0.0] * request["num_classes"]
            for category in result.classifications[0].categories:
                row[category.index] = float(category.score)
            scores.append(row)
    return {"scores": scores}


def classify_files(request: dict) -> dict:
    import mediapipe as mp
    import numpy as np
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core import base_options

    options = vision.ImageClassifierOptions(
        base_options=base_options.BaseOptions(model_asset_path=request["model"]), max_results=-1)
    scores, errors, pixels = [], [], {}
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for i, path in enumerate(request["files"]):
            try:
                image = mp.Image.create_from_file(path)
                result = classifier.classify(image)
            except Exception as exc:  # one unreadable file is that file's result, not the batch's
                lines = [line for line in str(exc).splitlines() if line.strip()]
                scores.append(None)
                errors.append(f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300])
                pixels[f"img{i}"] = np.zeros((0, 0, 3), np.uint8)
                continue
            row = [0.0] * request["num_classes"]
            for category in result.classifications[0].categories:
                row[category.index] = float(category.score)
            scores.append(row)
            errors.append(None)
            view = np.asarray(image.numpy_view())
            if view.ndim == 2:
                view = np.repeat(view[..., None], 3, axis=-1)
            pixels[f"img{i}"] = np.ascontiguousarray(view[..., :3], dtype=np.uint8)
    if request.get("pixels"):
        np.savez(request["pixels"], **pixels)
    return {"scores": scores, "errors": errors}


ACTIONS = {"write_image_metadata": write_image_metadata, "read_metadata": read_metadata,
           "classify_images": classify_images, "classify_files": classify_files}


MARKER = "EDGEKIT-RESULT "   # edgekit/runtime/child.py


def main(argv: list) -> int:
    action, request_path = argv
    with open(request_path, encoding="utf-8") as f:
        request = json.load(f)
    try:
        answer = ACTIONS[action](request)
    except Exception as exc:  # one line back to the caller, which raises a UserError with it
        lines = [line for line in str(exc).splitlines() if line.strip()]
        print(MARKER + json.dumps({"ok": False, "error": f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500]}))
        return 1
    print(MARKER + json.dumps({"ok": True, "result": answer}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
