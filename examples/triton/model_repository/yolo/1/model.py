"""Triton Python backend: the network (model.onnx beside this file) run with ONNX Runtime on the CPU."""

import json
import os

import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        threads = config.get("parameters", {}).get("intra_op_threads", {}).get("string_value")
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        self.input = config["input"][0]["name"]
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, self.input).as_numpy()
            results = self.session.run(self.outputs, {self.input: tensor})
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor(name, value) for name, value in zip(self.outputs, results)]))
        return responses
