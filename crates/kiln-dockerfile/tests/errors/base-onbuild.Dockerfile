FROM example.com/with-onbuild:1
